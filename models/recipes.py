"""Training recipes: a name maps to a scikit-learn Pipeline built for a dataset's columns.

Every recipe starts with a ColumnTransformer over the named columns, so the fitted Pipeline and its
ONNX conversion both take the dataset's named, typed columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.datasets import DatasetSpec, Task


@dataclass(frozen=True)
class Recipe:
    name: str
    task: Task
    estimator: Callable[[], BaseEstimator]
    description: str


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "logistic_regression",
            "classification",
            lambda: LogisticRegression(max_iter=2000, C=1.0),
            "Standardised features, L2-regularised logistic regression.",
        ),
        Recipe(
            "weak_logistic_regression",
            "classification",
            lambda: LogisticRegression(max_iter=2000, C=1e-6),
            "Deliberately over-regularised: a known-worse model for exercising the gate.",
        ),
    )
}

# Types the recipes put into a fitted Pipeline. The model is serialised with skops, which loads only
# the types listed here: a deliberate allow-list instead of unpickling arbitrary code.
SKOPS_TRUSTED_TYPES: list[str] = [
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._encoders.OneHotEncoder",
]


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; expected one of {sorted(RECIPES)}") from None


def preprocessor(spec: DatasetSpec) -> ColumnTransformer:
    transformers: list[tuple[str, BaseEstimator, list[str]]] = []
    if spec.numeric_features:
        transformers.append(("numeric", StandardScaler(), spec.numeric_features))
    if spec.categorical_features:
        transformers.append(
            ("categorical", OneHotEncoder(handle_unknown="ignore"), spec.categorical_features)
        )
    return ColumnTransformer(transformers)


def build_pipeline(recipe_name: str, spec: DatasetSpec) -> Pipeline:
    recipe = get_recipe(recipe_name)
    if recipe.task != spec.task:
        raise ValueError(f"recipe {recipe_name!r} is for {recipe.task}, dataset {spec.name!r} is {spec.task}")
    return Pipeline([("preprocess", preprocessor(spec)), ("model", recipe.estimator())])
