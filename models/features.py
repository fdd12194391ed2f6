"""Turn named feature records into ONNX input tensors, checking names, types and values.

NumPy only: the serving process uses this and must start without scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

import numpy as np

Datatype = Literal["FP64", "FP32", "INT64", "BYTES"]

ONNX_TO_DATATYPE: dict[str, Datatype] = {
    "tensor(double)": "FP64",
    "tensor(float)": "FP32",
    "tensor(int64)": "INT64",
    "tensor(string)": "BYTES",
}
NUMPY_DTYPES: dict[Datatype, type] = {
    "FP64": np.float64,
    "FP32": np.float32,
    "INT64": np.int64,
    "BYTES": np.object_,
}


class InputError(ValueError):
    """A request the model cannot take; the message names the field and what was expected."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: Datatype

    @property
    def is_numeric(self) -> bool:
        return self.datatype != "BYTES"


_NUMBER_TYPES = frozenset({int, float})


def _first(values: Sequence[Any], bad: Any) -> int:
    return next(i for i, v in enumerate(values) if bad(v))


def _overflows(value: Any) -> bool:
    try:
        float(value)
    except OverflowError:
        return True
    return False


def field_of(prefix: str, suffix: str = "") -> Callable[[int], str]:
    """The name of value ``i`` in a message: ``records[i].feature`` or ``inputs[2].data[i]``."""
    return lambda i: f"{prefix}[{i}]{suffix}"


def numbers(values: Sequence[Any], dtype: type, where: Callable[[int], str]) -> np.ndarray:
    """Numbers to a 1-D array of ``dtype``: bools, strings, nulls and non-finite values are refused.

    One pass over the values' types and one conversion, both in C; the per-value loop runs only to name
    the first bad value. ``where(i)`` is the field name of value ``i`` for the message.
    """
    if not set(map(type, values)) <= _NUMBER_TYPES:  # bool is not int here: type(True) is bool
        i = _first(values, lambda v: type(v) not in _NUMBER_TYPES)
        raise InputError(where(i), f"expected a number, got {type(values[i]).__name__} {values[i]!r:.40}")
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        i = _first(values, _overflows)
        raise InputError(where(i), f"expected a finite number, got {values[i]!r:.40}") from None
    finite = np.isfinite(array)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise InputError(where(i), f"expected a finite number, got {values[i]}")
    return array if dtype is np.float64 else array.astype(dtype)


def strings(values: Sequence[Any], where: Callable[[int], str]) -> np.ndarray:
    if not set(map(type, values)) <= {str}:
        i = _first(values, lambda v: not isinstance(v, str))
        raise InputError(where(i), f"expected a string, got {type(values[i]).__name__} {values[i]!r:.40}")
    return np.array(values, dtype=object)


def _check_names(records: Sequence[Mapping[str, Any]], expected: set[str]) -> None:
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InputError(f"records[{index}]", "expected an object of named features")
        keys = record.keys()
        if keys != expected:
            missing = sorted(expected - keys)
            unknown = sorted(keys - expected)
            problems = []
            if missing:
                problems.append(f"missing features {missing}")
            if unknown:
                problems.append(f"unknown features {unknown}")
            raise InputError(
                f"records[{index}]", "; ".join(problems) + f" (expected {len(expected)} features)"
            )


def _columns(records: Sequence[Mapping[str, Any]], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Records -> columns in C: ``itemgetter`` per record, then ``zip(*rows)`` transposes."""
    names = [spec.name for spec in specs]
    rows = list(map(itemgetter(*names), records)) if len(names) > 1 else [(r[names[0]],) for r in records]
    feeds = {}
    for spec, column in zip(specs, zip(*rows, strict=True), strict=True):
        where = field_of("records", f".{spec.name}")
        values = (
            numbers(column, NUMPY_DTYPES[spec.datatype], where) if spec.is_numeric else strings(column, where)
        )
        feeds[spec.name] = values.reshape(-1, 1)
    return feeds


def feeds_from_records(
    records: Sequence[Mapping[str, Any]], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """One (n, 1) tensor per model input from a list of ``{feature: value}`` records."""
    if not records:
        raise InputError("records", "expected at least one record")
    _check_names(records, {spec.name for spec in specs})
    return _columns(records, specs)
