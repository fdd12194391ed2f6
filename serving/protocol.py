"""The Open Inference Protocol (v2 REST) in plain functions: parse an infer request, build responses.

https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
Every problem with a request raises ``InputError`` naming the field and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.features import NUMPY_DTYPES, InputError, TensorSpec

NUMERIC_DATATYPES = frozenset({"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8"})
NUMPY_TO_DATATYPE = {
    "float64": "FP64",
    "float32": "FP32",
    "int64": "INT64",
    "int32": "INT32",
    "object": "BYTES",
}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    feeds: dict[str, np.ndarray]
    rows: int
    outputs: tuple[str, ...] | None


def _numbers(field: str, data: list[Any], dtype: type) -> np.ndarray:
    try:
        array = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        bad = next(
            (i for i, v in enumerate(data) if isinstance(v, bool) or not isinstance(v, int | float)), 0
        )
        raise InputError(f"{field}[{bad}]", f"expected a number, got {data[bad]!r:.40}") from None
    if any(type(v) is bool for v in data):
        bad = next(i for i, v in enumerate(data) if type(v) is bool)
        raise InputError(f"{field}[{bad}]", f"expected a number, got {data[bad]!r}")
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise InputError(f"{field}[{bad}]", f"expected a finite number, got {data[bad]}")
    return array.astype(dtype, copy=False)


def _strings(field: str, data: list[Any]) -> np.ndarray:
    for index, value in enumerate(data):
        if not isinstance(value, str):
            raise InputError(
                f"{field}[{index}]", f"expected a string, got {type(value).__name__} {value!r:.40}"
            )
    return np.array(data, dtype=object)


def _rows_from_shape(field: str, shape: Any) -> int:
    valid = (
        isinstance(shape, list)
        and len(shape) in (1, 2)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and shape[0] >= 1
        and (len(shape) == 1 or shape[1] == 1)
    )
    if not valid:
        raise InputError(field, f"expected [n] or [n, 1] with n >= 1, got {shape!r:.60}")
    return int(shape[0])


def _flatten(field: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise InputError(field, f"expected a list of values, got {type(data).__name__}")
    if data and all(isinstance(v, list) for v in data):  # nested [[v], [v], ...] for shape [n, 1]
        if any(len(v) != 1 for v in data):
            raise InputError(field, "expected one value per row")
        return [v[0] for v in data]
    return data


def parse_infer_request(body: Any, inputs: Sequence[TensorSpec]) -> InferRequest:
    """Validate an infer request against the model's inputs; return one (n, 1) tensor per input."""
    if not isinstance(body, dict):
        raise InputError("body", f"expected a JSON object, got {type(body).__name__}")
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InputError("inputs", "expected a non-empty list of input tensors {name, shape, datatype, data}")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError("id", f"expected a string, got {type(request_id).__name__}")
    specs = {spec.name: spec for spec in inputs}
    feeds: dict[str, np.ndarray] = {}
    rows: int | None = None
    for index, tensor in enumerate(tensors):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict):
            raise InputError(where, "expected an object {name, shape, datatype, data}")
        missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
        if missing:
            raise InputError(where, f"missing {missing}")
        name, datatype = tensor["name"], tensor["datatype"]
        spec = specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InputError(f"{where}.name", f"unknown input {name!r:.60}; expected one of {sorted(specs)}")
        if name in feeds:
            raise InputError(f"{where}.name", f"input {name!r} given twice")
        if spec.is_numeric and datatype not in NUMERIC_DATATYPES:
            raise InputError(
                f"{where}.datatype", f"expected {spec.datatype} for {name!r}, got {datatype!r:.20}"
            )
        if not spec.is_numeric and datatype != "BYTES":
            raise InputError(f"{where}.datatype", f"expected BYTES for {name!r}, got {datatype!r:.20}")
        count = _rows_from_shape(f"{where}.shape", tensor["shape"])
        data = _flatten(f"{where}.data", tensor["data"])
        if len(data) != count:
            raise InputError(
                f"{where}.data", f"expected {count} values for shape {tensor['shape']}, got {len(data)}"
            )
        if rows is not None and count != rows:
            raise InputError(f"{where}.shape", f"{count} rows, but the other inputs have {rows}")
        rows = count
        values = (
            _numbers(f"{where}.data", data, NUMPY_DTYPES[spec.datatype])
            if spec.is_numeric
            else _strings(f"{where}.data", data)
        )
        feeds[name] = values.reshape(-1, 1)
    absent = sorted(set(specs) - set(feeds))
    if absent:
        raise InputError("inputs", f"missing tensors for {absent}")
    return InferRequest(id=request_id, feeds=feeds, rows=rows or 0, outputs=_requested_outputs(body))


def _requested_outputs(body: dict[str, Any]) -> tuple[str, ...] | None:
    requested = body.get("outputs")
    if requested is None:
        return None
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise InputError("outputs", "expected a list of {name} objects")
    return tuple(o["name"] for o in requested)


def output_tensor(name: str, values: np.ndarray) -> dict[str, Any]:
    array = np.asarray(values)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    datatype = NUMPY_TO_DATATYPE.get(str(array.dtype), "BYTES")
    data = array.ravel()
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": data.tolist() if datatype == "BYTES" else data,
    }
