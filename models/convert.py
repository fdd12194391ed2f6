"""ONNX conversion of a fitted Pipeline and the parity check against scikit-learn."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DataType, DoubleTensorType, StringTensorType
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from models.datasets import DatasetSpec

PARITY_TOLERANCE = 1e-5


class ConversionError(RuntimeError):
    """skl2onnx could not convert the model; the message says why."""


@dataclass(frozen=True)
class ParityReport:
    rows: int
    labels_identical: bool
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.labels_identical and self.max_abs_diff <= self.tolerance


def initial_types(spec: DatasetSpec) -> list[tuple[str, DataType]]:
    """One named (n, 1) input per column: doubles for numbers (tight parity), strings for categories."""
    return [
        (f.name, DoubleTensorType([None, 1]) if f.kind == "numeric" else StringTensorType([None, 1]))
        for f in spec.features
    ]


def to_onnx(pipeline: Pipeline, spec: DatasetSpec, metadata: dict[str, str]) -> onnx.ModelProto:
    estimator = pipeline.steps[-1][1]
    options = {id(estimator): {"zipmap": False}} if is_classifier(estimator) else None
    try:
        model: onnx.ModelProto = convert_sklearn(pipeline, initial_types=initial_types(spec), options=options)
    except Exception as exc:  # skl2onnx raises many types; all mean "cannot convert"
        raise ConversionError(f"{type(exc).__name__}: {exc}") from exc
    props = dict(metadata)
    if is_classifier(estimator):
        props["classes"] = json.dumps([c.item() if hasattr(c, "item") else c for c in pipeline.classes_])
    onnx.helper.set_model_props(model, props)
    return model


def onnx_feeds(frame: pd.DataFrame, spec: DatasetSpec) -> dict[str, np.ndarray]:
    return {
        f.name: frame[[f.name]].to_numpy(dtype=np.float64 if f.kind == "numeric" else object)
        for f in spec.features
    }


def check_parity(
    pipeline: Pipeline,
    model: onnx.ModelProto,
    frame: pd.DataFrame,
    spec: DatasetSpec,
    tolerance: float = PARITY_TOLERANCE,
) -> ParityReport:
    """Compare ONNX outputs with scikit-learn's on the same rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, onnx_feeds(frame, spec))
    x = frame[spec.feature_names]
    if spec.task == "classification":
        labels, probabilities = outputs[0].ravel(), outputs[1]
        expected_labels = pipeline.predict(x)
        diff = np.abs(probabilities - pipeline.predict_proba(x))
        identical = bool(np.array_equal(labels, expected_labels))
    else:
        diff = np.abs(outputs[0].ravel() - pipeline.predict(x))
        identical = True
    return ParityReport(
        rows=len(frame),
        labels_identical=identical,
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        tolerance=tolerance,
    )
