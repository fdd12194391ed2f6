import pytest
from sklearn.compose import ColumnTransformer

from models import datasets
from models.recipes import RECIPES, SKOPS_TRUSTED_TYPES, build_pipeline, get_recipe

SPEC_FOR_TASK = {"classification": datasets.CHURN, "regression": datasets.HOUSING}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_a_pipeline_over_named_columns(name: str) -> None:
    spec = SPEC_FOR_TASK[RECIPES[name].task]
    pipeline = build_pipeline(name, spec)
    preprocess = pipeline.steps[0][1]
    assert isinstance(preprocess, ColumnTransformer)
    columns = [c for _, _, cols in preprocess.transformers for c in cols]
    assert columns == spec.numeric_features + spec.categorical_features


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_fitted_recipe_round_trips_through_skops_with_the_allow_list(name: str) -> None:
    import skops.io

    spec = SPEC_FOR_TASK[RECIPES[name].task]
    frame = datasets.load_frame(datasets.demo_source(spec.name)).head(300)
    pipeline = build_pipeline(name, spec).fit(frame[spec.feature_names], frame[spec.target])
    loaded = skops.io.loads(skops.io.dumps(pipeline), trusted=SKOPS_TRUSTED_TYPES)
    assert (loaded.predict(frame[spec.feature_names]) == pipeline.predict(frame[spec.feature_names])).all()


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
