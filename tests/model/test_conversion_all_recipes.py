"""Every recipe on every dataset it fits: named typed ONNX inputs and parity on all held-out rows."""

import numpy as np
import pytest

from flows.train import fit
from models import datasets
from models.convert import check_parity, onnx_feeds, to_onnx
from models.features import TensorSpec, feeds_from_records
from models.recipes import RECIPES
from models.runtime import make_session

# Known limitation, kept visible: skl2onnx stores HistGradientBoosting thresholds as float32, and after a
# StandardScaler the churn data's values sit close enough to them that some rows take the other branch
# (probabilities off by ~0.05). The gate's parity check rejects such a version; the strict xfail turns
# into a failure the day the conversion gets it right.
KNOWN_PARITY_LOSS = {("hist_gradient_boosting_scaled", "churn")}
CASES = [
    pytest.param(
        recipe.name,
        spec,
        id=f"{recipe.name}-{spec.name}",
        marks=pytest.mark.xfail(strict=True, reason="float32 thresholds after scaling")
        if (recipe.name, spec.name) in KNOWN_PARITY_LOSS
        else (),
    )
    for recipe in RECIPES.values()
    for spec in datasets.SPECS.values()
    if recipe.task == spec.task and not recipe.name.startswith("weak")
]


@pytest.fixture(scope="module")
def splits() -> dict[str, datasets.Split]:
    return {
        name: datasets.split(datasets.load_frame(datasets.demo_source(name)), spec)
        for name, spec in datasets.SPECS.items()
    }


@pytest.mark.parametrize(("recipe", "spec"), CASES)
def test_parity_on_all_holdout_rows(recipe: str, spec: datasets.DatasetSpec, splits) -> None:
    split = splits[spec.name]
    pipeline = fit(split, recipe)
    model = to_onnx(pipeline, spec, {"model_name": "m"})
    report = check_parity(pipeline, model, split.holdout, spec, tolerance=1e-5)
    assert report.rows == len(split.holdout)
    assert report.passed, report


def test_mixed_dataset_onnx_takes_named_typed_columns(splits) -> None:
    spec, split = datasets.CHURN, splits["churn"]
    model = to_onnx(fit(split, "hist_gradient_boosting"), spec, {})
    session = make_session(model.SerializeToString())
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("tenure_months", "tensor(double)"),
        ("monthly_charges", "tensor(double)"),
        ("support_calls", "tensor(double)"),
        ("plan", "tensor(string)"),
        ("region", "tensor(string)"),
        ("contract", "tensor(string)"),
    ]
    # JSON-style records (as serving receives them) give the same outputs as the frame
    rows = split.holdout.head(25)
    specs = [TensorSpec(f.name, "FP64" if f.kind == "numeric" else "BYTES") for f in spec.features]
    from_records = session.run(None, feeds_from_records(datasets.records(rows, spec), specs))
    from_frame = session.run(None, onnx_feeds(rows, spec))
    np.testing.assert_array_equal(from_records[0], from_frame[0])
    np.testing.assert_array_equal(from_records[1], from_frame[1])


def test_unseen_category_is_ignored_not_an_error(splits) -> None:
    spec, split = datasets.CHURN, splits["churn"]
    pipeline = fit(split, "logistic_regression")
    session = make_session(to_onnx(pipeline, spec, {}).SerializeToString())
    rows = split.holdout.head(3).copy()
    rows["plan"] = "platinum"
    _labels, probabilities = session.run(None, onnx_feeds(rows, spec))
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(rows[spec.feature_names]), atol=1e-9)
