"""ONNX conversion of a fitted Pipeline and the parity check against scikit-learn.

Two documented workarounds for skl2onnx 1.20 with onnx 1.23 / onnxruntime 1.31 live here:

* ``_fix_hist_gradient_boosting_walker``: skl2onnx's HistGradientBoosting tree walker passes numpy booleans
  into the INTS attribute ``nodes_missing_value_tracks_true``, which onnx 1.23 refuses; cast them to int.
* ``_trees_in_float32``: scikit-learn's trees compare float32 features against their thresholds, while
  with double inputs skl2onnx feeds doubles to the tree node, so rows near a threshold take another path
  (price errors of 10+ seen). Cast the tree's input to float32 as scikit-learn does. skl2onnx also declares
  some tree outputs as double, which onnxruntime's tree ops never produce: emit float and cast to double
  right after, so the rest of the graph stays in double.

Parity: classification compares labels (identical) and probabilities (absolute difference); regression
compares values relative to their size, ``|onnx - sklearn| / max(1, |sklearn|)``, because float32 tree
outputs carry ~1e-7 relative error whatever the scale of the target.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DataType, DoubleTensorType, StringTensorType
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from models.datasets import DatasetSpec
from models.runtime import make_session

PARITY_TOLERANCE = 1e-5
TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}
_TREE_OPS = {"TreeEnsembleClassifier", "TreeEnsembleRegressor"}


class ConversionError(RuntimeError):
    """skl2onnx could not convert the model; the message says why."""


@dataclass(frozen=True)
class ParityReport:
    rows: int
    labels_identical: bool
    max_abs_diff: float  # probabilities (classification) or relative values (regression)
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.labels_identical and self.max_abs_diff <= self.tolerance


@functools.cache
def _fix_hist_gradient_boosting_walker() -> None:
    from skl2onnx.common import tree_ensemble

    add_node = tree_ensemble.add_node

    def add_node_with_int_flags(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return add_node(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    tree_ensemble.add_node = add_node_with_int_flags


def _trees_in_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    declared = {v.name: v.type.tensor_type.elem_type for v in [*graph.output, *graph.value_info]}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.domain != "ai.onnx.ml" or node.op_type not in _TREE_OPS:
            nodes.append(node)
            continue
        source = node.input[0]
        nodes.append(
            helper.make_node("Cast", [source], [f"{source}_f32"], to=TensorProto.FLOAT, name=f"{source}_f32")
        )
        node.input[0] = f"{source}_f32"
        nodes.append(node)
        for index, name in enumerate(node.output):
            is_label = node.op_type == "TreeEnsembleClassifier" and index == 0
            if is_label or declared.get(name) != TensorProto.DOUBLE:
                continue
            node.output[index] = f"{name}_float"
            nodes.append(
                helper.make_node(
                    "Cast", [f"{name}_float"], [name], to=TensorProto.DOUBLE, name=f"{name}_double"
                )
            )
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def initial_types(spec: DatasetSpec) -> list[tuple[str, DataType]]:
    """One named (n, 1) input per column: doubles for numbers (tight parity), strings for categories."""
    return [
        (f.name, DoubleTensorType([None, 1]) if f.kind == "numeric" else StringTensorType([None, 1]))
        for f in spec.features
    ]


def to_onnx(pipeline: Pipeline, spec: DatasetSpec, metadata: dict[str, str]) -> onnx.ModelProto:
    """Convert and load the result once in onnxruntime; any failure is a ``ConversionError``."""
    _fix_hist_gradient_boosting_walker()
    estimator = pipeline.steps[-1][1]
    options = {id(estimator): {"zipmap": False}} if is_classifier(estimator) else None
    try:
        model: onnx.ModelProto = convert_sklearn(
            pipeline, initial_types=initial_types(spec), options=options, target_opset=TARGET_OPSET
        )
        model = _trees_in_float32(model)
        make_session(model.SerializeToString())
    except Exception as exc:  # skl2onnx and onnxruntime raise many types; all mean "cannot convert"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConversionError(f"{type(exc).__name__}: {reason[:300]}") from exc
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
    outputs = make_session(model.SerializeToString()).run(None, onnx_feeds(frame, spec))
    x = frame[spec.feature_names]
    if spec.task == "classification":
        labels, probabilities = outputs[0].ravel(), outputs[1]
        diff = np.abs(probabilities - pipeline.predict_proba(x))
        identical = bool(np.array_equal(labels, pipeline.predict(x)))
    else:
        expected = pipeline.predict(x)
        diff = np.abs(outputs[0].ravel() - expected) / np.maximum(1.0, np.abs(expected))
        identical = True
    return ParityReport(
        rows=len(frame),
        labels_identical=identical,
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        tolerance=tolerance,
    )
