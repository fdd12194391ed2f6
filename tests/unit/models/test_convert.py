import json

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.pipeline import Pipeline

from models import datasets
from models.convert import ConversionError, check_parity, onnx_feeds, to_onnx


def test_onnx_model_takes_the_named_columns_and_carries_provenance(fitted: Pipeline) -> None:
    model = to_onnx(fitted, datasets.BREAST_CANCER, {"model_name": "m", "model_version": "3", "run_id": "r"})
    assert [i.name for i in model.graph.input] == datasets.BREAST_CANCER.feature_names
    props = {p.key: p.value for p in model.metadata_props}
    assert props["model_version"] == "3"
    assert props["run_id"] == "r"
    assert json.loads(props["classes"]) == [0, 1]


def test_parity_on_every_holdout_row(fitted: Pipeline, split: datasets.Split) -> None:
    model = to_onnx(fitted, datasets.BREAST_CANCER, {})
    report = check_parity(fitted, model, split.holdout, datasets.BREAST_CANCER, tolerance=1e-5)
    assert report.rows == len(split.holdout)
    assert report.labels_identical
    assert report.max_abs_diff <= 1e-5
    assert report.passed


def test_parity_fails_when_the_onnx_model_is_not_the_same_model(
    fitted: Pipeline, split: datasets.Split
) -> None:
    from flows.train import fit

    other = to_onnx(fit(split, "weak_logistic_regression"), datasets.BREAST_CANCER, {})
    report = check_parity(fitted, other, split.holdout, datasets.BREAST_CANCER)
    assert not report.passed
    assert report.max_abs_diff > 1e-3


def test_unconvertible_model_raises_conversion_error_with_reason() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    spec = datasets.DatasetSpec("t", "classification", "y", (datasets.FeatureSpec("a"),))
    custom = Pipeline([("p", ColumnTransformer([("f", FunctionTransformer(np.log1p), ["a"])]))])
    custom.fit(__import__("pandas").DataFrame({"a": [1.0, 2.0]}))
    with pytest.raises(ConversionError, match=r"FunctionTransformer|Unable to find"):
        to_onnx(custom, spec, {})


def test_feeds_are_double_columns(split: datasets.Split, fitted: Pipeline) -> None:
    feeds = onnx_feeds(split.holdout.head(4), datasets.BREAST_CANCER)
    assert all(v.shape == (4, 1) and v.dtype == np.float64 for v in feeds.values())
    session = ort.InferenceSession(
        to_onnx(fitted, datasets.BREAST_CANCER, {}).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    labels, _ = session.run(None, feeds)
    assert labels.tolist() == fitted.predict(split.x_holdout.head(4)).tolist()
