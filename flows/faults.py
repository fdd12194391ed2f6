"""Fault injection: register a version that is broken at serve time, on purpose.

Used by the tests and by a user who wants to watch the system refuse or roll back a bad model
(``mlops fault <kind>``). The broken version is a copy of a good one (same run, same lineage and golden
rows, gate passed) whose ONNX model is replaced, tagged ``fault.injected`` so nobody mistakes it for a
real candidate:

* ``unloadable``: bytes that are not an ONNX model; no worker can load it.
* ``wrong_outputs``: loads, but adds 0.3 to the model's last output (probabilities or values).
* ``slow``: correct outputs, but a chain of large matrix products runs first (~180 ms per call here).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from mlflow import MlflowClient
from onnx import TensorProto, helper, numpy_helper

from flows.tracking import experiment_id
from models.registry import Tag
from models.settings import Settings

FaultKind = Literal["unloadable", "wrong_outputs", "slow"]
FAULT_TAG = "fault.injected"


def _reroute_last_output(model: onnx.ModelProto, suffix: str) -> tuple[str, str]:
    """Rename the producer of the last graph output; return (new internal name, graph output name)."""
    output = model.graph.output[-1].name
    internal = f"{output}_{suffix}"
    for node in model.graph.node:
        for index, name in enumerate(node.output):
            if name == output:
                node.output[index] = internal
    return internal, output


def _add_constant(model: onnx.ModelProto, value: float, suffix: str) -> onnx.ModelProto:
    internal, output = _reroute_last_output(model, suffix)
    elem = model.graph.output[-1].type.tensor_type.elem_type
    dtype = np.float64 if elem == TensorProto.DOUBLE else np.float32
    model.graph.initializer.append(
        numpy_helper.from_array(np.array([value], dtype=dtype), f"fault_{suffix}_c")
    )
    model.graph.node.append(helper.make_node("Add", [internal, f"fault_{suffix}_c"], [output]))
    return model


def wrong_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    return _add_constant(model, 0.3, "wrong")


def slow(model: onnx.ModelProto, width: int = 2048, layers: int = 320) -> onnx.ModelProto:
    """Same outputs, plus ``layers`` (1, width) x (width, width) products per call, whatever the batch.

    One ``Loop`` node repeats one ``MatMul``, so the weights are stored and prepacked once.
    """
    graph = model.graph
    # An orthogonal matrix keeps the row's norm, so no number of layers overflows to inf (inf * 0 is NaN).
    weights = np.linalg.qr(np.random.default_rng(0).normal(size=(width, width)))[0].astype(np.float32)
    elem = graph.output[-1].type.tensor_type.elem_type
    dtype = np.float64 if elem == TensorProto.DOUBLE else np.float32
    graph.initializer.extend(
        [
            numpy_helper.from_array(weights, "fault_slow_w"),
            numpy_helper.from_array(np.array([1, width], dtype=np.int64), "fault_slow_reps"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "fault_slow_axis0"),
            numpy_helper.from_array(np.array(layers, dtype=np.int64), "fault_slow_trips"),
            numpy_helper.from_array(np.array(True), "fault_slow_true"),
            numpy_helper.from_array(np.array([0.0], dtype=dtype), "fault_slow_zero"),
        ]
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["h_in", "fault_slow_w"], ["h_out"]),
        ],
        "fault_slow_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, width]),
        ],
    )
    nodes = [  # one (1, width) row whatever the batch size, so every call costs the same
        helper.make_node("Cast", [graph.input[0].name], ["fault_slow_x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["fault_slow_x", "fault_slow_axis0"], ["fault_slow_x1"], keepdims=1),
        helper.make_node("Tile", ["fault_slow_x1", "fault_slow_reps"], ["fault_slow_h0"]),
        helper.make_node(
            "Loop", ["fault_slow_trips", "fault_slow_true", "fault_slow_h0"], ["fault_slow_h"], body=body
        ),
        helper.make_node("ReduceSum", ["fault_slow_h"], ["fault_slow_s"], keepdims=1),
        helper.make_node("Cast", ["fault_slow_s"], ["fault_slow_sd"], to=elem),
        helper.make_node("Mul", ["fault_slow_sd", "fault_slow_zero"], ["fault_slow_z"]),
    ]
    internal, output = _reroute_last_output(model, "slow")
    nodes.append(helper.make_node("Add", [internal, "fault_slow_z"], [output]))
    graph.node.extend(nodes)
    return model


def broken_onnx(base: bytes, kind: FaultKind, slow_layers: int = 320) -> bytes:
    if kind == "unloadable":
        return b"this is not an ONNX protobuf"
    model = onnx.load_from_string(base)
    if kind == "wrong_outputs":
        return bytes(wrong_outputs(model).SerializeToString())
    if kind == "slow":
        return bytes(slow(model, layers=slow_layers).SerializeToString())
    raise ValueError(f"unknown fault {kind!r}; expected unloadable, wrong_outputs or slow")


def _base_onnx(client: MlflowClient, onnx_uri: str, folder: Path) -> bytes:
    import mlflow.artifacts

    location = client.get_logged_model(onnx_uri.removeprefix("models:/")).artifact_location
    mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(folder))
    return next(folder.rglob("*.onnx")).read_bytes()


def register_broken_version(
    client: MlflowClient, settings: Settings, base_version: str, kind: FaultKind, slow_layers: int = 320
) -> str:
    """A new version of ``settings.model_name`` that looks like ``base_version`` but breaks at serve time.

    ``slow_layers`` sets how slow ``slow`` is: 320 is about 180 ms per call on an idle core here.
    """
    base = client.get_model_version(settings.model_name, base_version)
    model = client.create_logged_model(
        experiment_id(client, settings), name=f"onnx-fault-{kind}", source_run_id=base.run_id
    )
    with tempfile.TemporaryDirectory() as folder:
        base_onnx = _base_onnx(client, base.tags[Tag.ONNX_URI], Path(folder) / "base")
        content = broken_onnx(base_onnx, kind, slow_layers)
        path = Path(folder) / "model.onnx"
        path.write_bytes(content)
        client.log_model_artifact(model.model_id, str(path))
    client.finalize_logged_model(model.model_id, "READY")
    tags = {**base.tags, Tag.ONNX_URI: f"models:/{model.model_id}", FAULT_TAG: kind}
    version = client.create_model_version(
        settings.model_name,
        source=str(base.source),
        run_id=base.run_id,
        tags=tags,
        description=f"FAULT INJECTED ({kind}) from version {base_version}",
        # a tracking server refuses a models:/ source without the id of the model it names
        model_id=base.model_id or str(base.source).removeprefix("models:/"),
    )
    return str(version.version)
