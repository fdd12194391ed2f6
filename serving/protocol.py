"""The Open Inference Protocol (v2 REST) in plain functions: parse an infer request, build responses.

https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
Every problem with a request raises ``InputError`` naming the field and what was expected.

Large tensors can travel as raw bytes (the binary tensor data extension, as Triton's and KServe's clients
send them): the ``Inference-Header-Content-Length`` header gives the length of the JSON part at the start
of the body; a tensor with ``parameters.binary_data_size`` (and no ``data``) takes that many bytes of what
follows, in the order of the inputs, little-endian, row-major (``BYTES``: each element a 4-byte length and
its bytes). ``binary_data_output`` asks for the outputs the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from models.features import NUMPY_DTYPES, InputError, TensorSpec, field_of, model_input, number_block, strings

NUMERIC_DATATYPES = frozenset({"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8"})
NUMPY_TO_DATATYPE = {
    "float64": "FP64",
    "float32": "FP32",
    "int64": "INT64",
    "int32": "INT32",
    "object": "BYTES",
}
# Looked up by the dtype itself: ``str(dtype)`` took 2 us, a tenth of an answer's rendering.
_DTYPE_TO_DATATYPE = {np.dtype(name): datatype for name, datatype in NUMPY_TO_DATATYPE.items()}


BINARY_HEADER = "inference-header-content-length"
_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "data"})
_BINARY_TENSOR_KEYS = frozenset({"name", "shape", "datatype"})
_KEY_ORDER = ("name", "shape", "datatype", "data")
WIRE_DTYPES = {
    "FP64": "<f8",
    "FP32": "<f4",
    "FP16": "<f2",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "i1",
    "UINT8": "u1",
}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    feeds: dict[str, np.ndarray]
    rows: int
    outputs: tuple[str, ...] | None
    binary_output: bool = False  # the request's default (``parameters.binary_data_output``)
    binary_outputs: frozenset[str] = (
        frozenset()
    )  # asked for one by one (``outputs[i].parameters.binary_data``)
    json_outputs: frozenset[str] = frozenset()  # asked for as JSON one by one, whatever the default

    def is_binary(self, output: str) -> bool:
        return output in self.binary_outputs or (self.binary_output and output not in self.json_outputs)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of a request (all JSON without the extension's header)."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InputError(
            "Inference-Header-Content-Length", f"expected the JSON part's length, at most {len(body)} bytes"
        )
    return body[: int(header_length)], body[int(header_length) :]


class _Binary:
    """Reads the binary part tensor by tensor, checking each size and that nothing is left over."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def take(self, where: str, size: Any) -> memoryview:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(
                f"{where}.parameters.binary_data_size", f"expected a byte count, got {size!r:.40}"
            )
        if self.offset + size > len(self.data):
            left = len(self.data) - self.offset
            raise InputError(
                f"{where}.parameters.binary_data_size", f"{size} bytes, but only {left} are left"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise InputError("body", f"{len(self.data) - self.offset} bytes of binary data no input claims")


def _binary_values(where: str, chunk: memoryview, datatype: str, count: int, spec: TensorSpec) -> np.ndarray:
    if datatype == "BYTES":
        return strings(_length_prefixed(where, chunk, count), field_of(f"{where}.data"))
    width = np.dtype(WIRE_DTYPES[datatype]).itemsize
    if len(chunk) != count * width:
        raise InputError(
            f"{where}.parameters.binary_data_size",
            f"expected {count * width} bytes for {count} {datatype} values, got {len(chunk)}",
        )
    values: np.ndarray = np.frombuffer(chunk, dtype=WIRE_DTYPES[datatype]).astype(NUMPY_DTYPES[spec.datatype])
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InputError(f"{where}.data[{bad}]", f"expected a finite number, got {values[bad]}")
    return values


def _length_prefixed(where: str, chunk: memoryview, count: int) -> list[Any]:
    values: list[Any] = []
    offset = 0
    while offset < len(chunk) and len(values) < count:
        (size,) = (
            np.frombuffer(chunk[offset : offset + 4], dtype="<u4") if offset + 4 <= len(chunk) else (-1,)
        )
        if size < 0 or offset + 4 + size > len(chunk):
            raise InputError(f"{where}.data[{len(values)}]", "truncated length-prefixed BYTES element")
        try:
            values.append(bytes(chunk[offset + 4 : offset + 4 + size]).decode())
        except UnicodeDecodeError:
            raise InputError(f"{where}.data[{len(values)}]", "expected UTF-8 text") from None
        offset += 4 + size
    if len(values) != count or offset != len(chunk):
        raise InputError(f"{where}.parameters.binary_data_size", f"expected exactly {count} BYTES elements")
    return values


class _Where:
    """``inputs[i]``, formatted only when a message needs it."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __str__(self) -> str:
        return f"inputs[{self.index}]"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _rows_from_shape(field: str, shape: Any) -> int:
    valid = (
        type(shape) is list
        and 1 <= len(shape) <= 2
        and type(shape[0]) is int  # not bool, not float
        and shape[0] >= 1
        and (len(shape) == 1 or (type(shape[1]) is int and shape[1] == 1))
    )
    if not valid:
        raise InputError(field, f"expected [n] or [n, 1] with n >= 1, got {shape!r:.60}")
    return int(shape[0])


def _flatten(field: str, data: Any) -> list[Any]:
    if type(data) is not list:
        raise InputError(field, f"expected a list of values, got {type(data).__name__}")
    if data and type(data[0]) is list and all(type(v) is list for v in data):  # [[v], [v], ...]: [n, 1]
        if any(len(v) != 1 for v in data):
            raise InputError(field, "expected one value per row")
        return [v[0] for v in data]
    return data


def _common_feeds(
    tensors: list[Any], inputs: Sequence[TensorSpec]
) -> tuple[dict[str, np.ndarray], int] | None:
    """The feeds of the common request, checked against the model's inputs as a table; None for any other.

    Common: one JSON tensor per model input, in the model's order, each exactly ``{name, shape, datatype,
    data}`` with a numeric datatype, shape ``[n, 1]`` (the same n for all) and a flat list of n values. A
    third less time than the general path (44.5 -> 28.6 us for the demo model's row), which takes every
    other request and words every refusal (a bad value here also goes back to it: one wording each).
    """
    if len(tensors) != len(inputs):
        return None
    rows: int | None = None
    columns = []
    for tensor, spec in zip(tensors, inputs, strict=True):
        if type(tensor) is not dict or len(tensor) != 4 or tensor.get("name") != spec.name:
            return None
        shape, data = tensor.get("shape"), tensor.get("data")
        if (
            type(shape) is not list
            or len(shape) != 2
            or type(shape[0]) is not int
            or shape[1] != 1
            or type(data) is not list
            or len(data) != shape[0]
            or not data
            or type(data[0]) is list
            or not spec.is_numeric
            or type(datatype := tensor.get("datatype")) is not str
            or datatype not in NUMERIC_DATATYPES
        ):
            return None
        if rows is None:
            rows = len(data)
        elif len(data) != rows:
            return None
        columns.append(data)
    try:
        block = number_block(columns, lambda i, j: f"inputs[{i}].data[{j}]")
    except InputError:
        return None
    return {
        spec.name: model_input(values, spec) for spec, values in zip(inputs, block, strict=True)
    }, rows or 0


def parse_infer_request(body: Any, inputs: Sequence[TensorSpec], binary: bytes = b"") -> InferRequest:
    """Validate an infer request against the model's inputs; return one (n, 1) tensor per input."""
    if not isinstance(body, dict):
        raise InputError("body", f"expected a JSON object, got {type(body).__name__}")
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InputError("inputs", "expected a non-empty list of input tensors {name, shape, datatype, data}")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError("id", f"expected a string, got {type(request_id).__name__}")
    common = None if binary else _common_feeds(tensors, inputs)
    if common is not None:
        return InferRequest(
            id=request_id,
            feeds=common[0],
            rows=common[1],
            outputs=_requested_outputs(body),
            binary_output=_binary_output(body),
            binary_outputs=_outputs_binary(body, True),
            json_outputs=_outputs_binary(body, False),
        )
    specs = {spec.name: spec for spec in inputs}
    if len(tensors) > len(specs):  # some are unknown or given twice: refused before any is read
        raise InputError("inputs", f"{len(tensors)} tensors, but the model has {len(specs)} inputs")
    raw = _Binary(binary)
    feeds: dict[str, np.ndarray] = {}
    numeric: list[tuple[int, TensorSpec, list[Any]]] = []  # JSON numbers, checked together below
    seen: set[str] = set()  # one set look-up per tensor: a scan of those before made a request quadratic
    rows: int | None = None
    # Each tensor's place is worded only for a refusal: formatting it for every tensor cost a tenth of the
    # parse. The common shapes ([n, 1], a flat list of n values) are recognised inline, the rest by helpers.
    for index, tensor in enumerate(tensors):
        where = _Where(index)
        if type(tensor) is not dict:
            raise InputError(str(where), "expected an object {name, shape, datatype, data}")
        size = _binary_size(str(where), tensor) if "parameters" in tensor else None
        if not tensor.keys() >= _TENSOR_KEYS and (size is None or not tensor.keys() >= _BINARY_TENSOR_KEYS):
            needed = _TENSOR_KEYS if size is None else _BINARY_TENSOR_KEYS
            raise InputError(
                str(where), f"missing {[k for k in _KEY_ORDER if k in needed and k not in tensor]}"
            )
        name, datatype = tensor["name"], tensor["datatype"]
        if type(datatype) is not str:  # a list or object would not even hash
            raise InputError(f"{where}.datatype", f"expected a string, got {type(datatype).__name__}")
        spec = specs.get(name) if type(name) is str else None
        if spec is None:
            raise InputError(f"{where}.name", f"unknown input {name!r:.60}; expected one of {sorted(specs)}")
        if name in seen:
            raise InputError(f"{where}.name", f"input {name!r} given twice")
        seen.add(name)
        is_numeric = spec.is_numeric
        if is_numeric and datatype not in NUMERIC_DATATYPES:
            raise InputError(
                f"{where}.datatype", f"expected {spec.datatype} for {name!r}, got {datatype!r:.20}"
            )
        if not is_numeric and datatype != "BYTES":
            raise InputError(f"{where}.datatype", f"expected BYTES for {name!r}, got {datatype!r:.20}")
        shape = tensor["shape"]
        if (
            type(shape) is list
            and len(shape) == 2
            and type(shape[0]) is int
            and shape[0] >= 1
            and shape[1] == 1
        ):
            count = shape[0]
        else:
            count = _rows_from_shape(f"{where}.shape", shape)
        if rows is not None and count != rows:
            raise InputError(f"{where}.shape", f"{count} rows, but the other inputs have {rows}")
        rows = count
        if size is not None:
            feeds[name] = _binary_values(
                str(where), raw.take(str(where), size), datatype, count, spec
            ).reshape(-1, 1)
            continue
        data = tensor["data"]
        if type(data) is not list or len(data) != count or (count and type(data[0]) is list):
            data = _json_data(str(where), tensor, count)
        if is_numeric:
            numeric.append((index, spec, data))
        else:
            feeds[name] = model_input(strings(data, field_of(f"{where}.data")), spec)
    raw.finish()
    if numeric:  # one type pass, one conversion, one finiteness test for every JSON tensor
        block = number_block(
            [data for _, _, data in numeric], lambda i, j: f"inputs[{numeric[i][0]}].data[{j}]"
        )
        for (_, spec, _), values in zip(numeric, block, strict=True):
            feeds[spec.name] = model_input(values, spec)
    absent = sorted(set(specs) - set(feeds))
    if absent:
        raise InputError("inputs", f"missing tensors for {absent}")
    return InferRequest(
        id=request_id,
        feeds={spec.name: feeds[spec.name] for spec in inputs},
        rows=rows or 0,
        outputs=_requested_outputs(body),
        binary_output=_binary_output(body),
        binary_outputs=_outputs_binary(body, True),
        json_outputs=_outputs_binary(body, False),
    )


def _binary_size(where: str, tensor: dict[str, Any]) -> Any:
    parameters = tensor.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InputError(f"{where}.parameters", "expected an object")
    size = parameters.get("binary_data_size")
    if size is not None and "data" in tensor:
        raise InputError(where, "give either data or parameters.binary_data_size, not both")
    return size


def _json_data(where: str, tensor: dict[str, Any], count: int) -> list[Any]:
    data = _flatten(f"{where}.data", tensor["data"])
    if len(data) != count:
        raise InputError(
            f"{where}.data", f"expected {count} values for shape {tensor['shape']}, got {len(data)}"
        )
    return data


def _binary_output(body: dict[str, Any]) -> bool:
    parameters = body.get("parameters")
    if parameters is None:
        return False
    if not isinstance(parameters, dict):
        raise InputError("parameters", "expected an object")
    wanted = parameters.get("binary_data_output", False)
    if not isinstance(wanted, bool):
        raise InputError("parameters.binary_data_output", f"expected true or false, got {wanted!r:.20}")
    return wanted


def _outputs_binary(body: dict[str, Any], binary: bool) -> frozenset[str]:
    """The requested outputs whose own ``parameters.binary_data`` is ``binary`` (Triton's clients ask so)."""
    chosen = set()
    for index, output in enumerate(body.get("outputs") or ()):
        parameters = output.get("parameters") if isinstance(output, dict) else None
        if parameters is None:
            continue
        if not isinstance(parameters, dict):
            raise InputError(f"outputs[{index}].parameters", "expected an object")
        wanted = parameters.get("binary_data")
        if wanted is not None and not isinstance(wanted, bool):
            raise InputError(
                f"outputs[{index}].parameters.binary_data", f"expected true or false, got {wanted!r:.20}"
            )
        if wanted is binary:
            chosen.add(output["name"])
    return frozenset(chosen)


def _requested_outputs(body: dict[str, Any]) -> tuple[str, ...] | None:
    requested = body.get("outputs")
    if requested is None:
        return None
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise InputError("outputs", "expected a list of {name} objects")
    return tuple(o["name"] for o in requested)


def _as_2d(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def output_tensor(name: str, values: np.ndarray) -> dict[str, Any]:
    array = _as_2d(values)
    datatype = _DTYPE_TO_DATATYPE.get(array.dtype, "BYTES")
    data = array.ravel()
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": data.tolist() if datatype == "BYTES" else data,
    }


def binary_output_tensor(name: str, values: np.ndarray) -> tuple[dict[str, Any], bytes]:
    """The tensor's header (``binary_data_size``, no ``data``) and its bytes, for a binary response."""
    array = _as_2d(values)
    datatype = _DTYPE_TO_DATATYPE.get(array.dtype, "BYTES")
    if datatype == "BYTES":
        encoded = [str(v).encode() for v in array.ravel()]
        data = b"".join(len(e).to_bytes(4, "little") + e for e in encoded)
    else:
        data = np.ascontiguousarray(array, dtype=WIRE_DTYPES[datatype]).tobytes()
    header = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    return {**header, "parameters": {"binary_data_size": len(data)}}, data


def binary_request(
    inputs: dict[str, np.ndarray], datatype: str = "FP64", **fields: Any
) -> tuple[bytes, dict[str, str]]:
    """A client's infer request with every input as raw bytes: the body and the headers to send."""
    tensors, chunks = [], []
    for name, values in inputs.items():
        data = np.ascontiguousarray(values, dtype=WIRE_DTYPES[datatype]).tobytes()
        shape = [len(values), 1]
        tensors.append(
            {
                "name": name,
                "shape": shape,
                "datatype": datatype,
                "parameters": {"binary_data_size": len(data)},
            }
        )
        chunks.append(data)
    head = orjson.dumps({**fields, "inputs": tensors})
    headers = {BINARY_HEADER: str(len(head)), "content-type": "application/octet-stream"}
    return b"".join([head, *chunks]), headers


def read_binary_response(body: bytes, header_length: str | None) -> dict[str, Any]:
    """A binary infer response as JSON would have carried it (each output's ``data`` filled in)."""
    head, rest = split_body(body, header_length)
    response: dict[str, Any] = orjson.loads(head)
    offset = 0
    for tensor in response["outputs"]:
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        chunk = rest[offset : offset + size]
        offset += size
        tensor["data"] = np.frombuffer(chunk, dtype=WIRE_DTYPES[tensor["datatype"]]).tolist()
    return response
