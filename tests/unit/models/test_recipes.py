import pytest
from sklearn.compose import ColumnTransformer

from models import datasets
from models.recipes import RECIPES, build_pipeline, get_recipe


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_a_pipeline_over_named_columns(name: str) -> None:
    pipeline = build_pipeline(name, datasets.BREAST_CANCER)
    preprocess = pipeline.steps[0][1]
    assert isinstance(preprocess, ColumnTransformer)
    columns = [c for _, _, cols in preprocess.transformers for c in cols]
    assert columns == datasets.BREAST_CANCER.feature_names


def test_recipe_must_fit_the_task() -> None:
    spec = datasets.DatasetSpec("r", "regression", "y", (datasets.FeatureSpec("x"),))
    with pytest.raises(ValueError, match="is for classification"):
        build_pipeline("logistic_regression", spec)


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="logistic_regression"):
        get_recipe("xgboost")


def test_categorical_columns_are_one_hot_encoded() -> None:
    spec = datasets.DatasetSpec(
        "mixed",
        "classification",
        "y",
        (datasets.FeatureSpec("size"), datasets.FeatureSpec("colour", "categorical")),
    )
    preprocess = build_pipeline("logistic_regression", spec).steps[0][1]
    assert [(name, cols) for name, _, cols in preprocess.transformers] == [
        ("numeric", ["size"]),
        ("categorical", ["colour"]),
    ]
