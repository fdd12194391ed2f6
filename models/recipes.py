"""Training recipes: a name maps to a scikit-learn Pipeline built for a dataset's columns.

Every recipe starts with a ColumnTransformer over the named columns, so the fitted Pipeline and its
ONNX conversion both take the dataset's named, typed columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.datasets import DatasetSpec, Task


@dataclass(frozen=True)
class Recipe:
    name: str
    task: Task
    estimator: Callable[[], BaseEstimator]
    description: str
    scale_numeric: bool = True  # trees split on raw values; scaling them only costs time


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "logistic_regression",
            "classification",
            lambda: LogisticRegression(max_iter=2000, C=1.0),
            "Linear: standardised features, L2-regularised logistic regression.",
        ),
        Recipe(
            "random_forest",
            "classification",
            lambda: RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=1, random_state=0),
            "Tree ensemble: a random forest of 100 trees.",
            scale_numeric=False,
        ),
        Recipe(
            "hist_gradient_boosting",
            "classification",
            lambda: HistGradientBoostingClassifier(max_iter=100, random_state=0),
            "Gradient boosting: histogram-based, 100 iterations.",
            scale_numeric=False,
        ),
        Recipe(
            "hist_gradient_boosting_scaled",
            "classification",
            lambda: HistGradientBoostingClassifier(max_iter=100, random_state=0),
            "Gradient boosting after a StandardScaler: the serving benchmark's reference model.",
        ),
        Recipe(
            "weak_logistic_regression",
            "classification",
            lambda: LogisticRegression(max_iter=2000, C=1e-6),
            "Deliberately over-regularised: a known-worse model for exercising the gate.",
        ),
        Recipe(
            "ridge",
            "regression",
            lambda: Ridge(alpha=1.0),
            "Linear: standardised features, ridge regression.",
        ),
        Recipe(
            "random_forest_regressor",
            "regression",
            lambda: RandomForestRegressor(n_estimators=100, min_samples_leaf=2, n_jobs=1, random_state=0),
            "Tree ensemble: a random forest of 100 trees.",
            scale_numeric=False,
        ),
        Recipe(
            "hist_gradient_boosting_regressor",
            "regression",
            lambda: HistGradientBoostingRegressor(max_iter=100, random_state=0),
            "Gradient boosting: histogram-based, 100 iterations.",
            scale_numeric=False,
        ),
    )
}

# The model is serialised with skops, which refuses to load types it does not trust by default. These are
# the ones our recipes need beyond skops' defaults, listed on purpose instead of unpickling arbitrary code;
# a recipe that needs another fails the round-trip test in tests/unit/models/test_recipes.py.
SKOPS_TRUSTED_TYPES: list[str] = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
]


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; expected one of {sorted(RECIPES)}") from None


def preprocessor(spec: DatasetSpec, scale_numeric: bool = True) -> ColumnTransformer:
    transformers: list[tuple[str, BaseEstimator | str, list[str]]] = []
    if spec.numeric_features:
        numeric = StandardScaler() if scale_numeric else "passthrough"
        transformers.append(("numeric", numeric, spec.numeric_features))
    if spec.categorical_features:
        transformers.append(
            ("categorical", OneHotEncoder(handle_unknown="ignore"), spec.categorical_features)
        )
    return ColumnTransformer(transformers)


def build_pipeline(recipe_name: str, spec: DatasetSpec) -> Pipeline:
    recipe = get_recipe(recipe_name)
    if recipe.task != spec.task:
        raise ValueError(f"recipe {recipe_name!r} is for {recipe.task}, dataset {spec.name!r} is {spec.task}")
    return Pipeline([("preprocess", preprocessor(spec, recipe.scale_numeric)), ("model", recipe.estimator())])
