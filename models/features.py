"""Turn named feature records into ONNX input tensors, checking names, types and values.

NumPy only: the serving process uses this and must start without scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
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
        self.field = str(field)  # a lazily worded place (``serving.protocol``) becomes its text
        self.problem = problem


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: Datatype

    @property
    def is_numeric(self) -> bool:
        return self.datatype != "BYTES"


_NUMBER_TYPES = frozenset({int, float})
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _first(values: Sequence[Any], bad: Callable[[Any], bool]) -> int:
    return next(i for i, v in enumerate(values) if bad(v))


def _finite(value: float) -> bool:
    """Whether a JSON number is a finite float64 (an integer of any size is one while it fits a float)."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float range
        return False


def field_of(prefix: str, suffix: str = "") -> Callable[[int], str]:
    """The name of value ``i`` in a message: ``records[i].feature`` or ``inputs[2].data[i]``."""
    return lambda i: f"{prefix}[{i}]{suffix}"


def _bad_number(rows: Sequence[Sequence[Any]], where: Callable[[int, int], str]) -> InputError:
    """The first value of ``rows`` that is not a finite number, named (the slow path, for the message)."""
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if type(value) not in _NUMBER_TYPES:
                return InputError(where(i, j), f"expected a number, got {type(value).__name__} {value!r:.40}")
            if not _finite(value):
                return InputError(where(i, j), f"expected a finite number, got {value!r:.40}")
    return InputError(where(0, 0), "expected numbers")


def number_block(rows: Sequence[Sequence[Any]], where: Callable[[int, int], str]) -> np.ndarray:
    """Equal-length rows of numbers to one float64 array: bools, strings, nulls, non-finite refused.

    One pass over the values' types, one conversion and one finiteness test, all in C, however many
    features and rows; only a bad request walks the values in Python, to name the first bad one as
    ``where(row, column)``.
    """
    if not set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:  # type(True) is bool, not int
        raise _bad_number(rows, where)
    try:
        block = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        raise _bad_number(rows, where) from None
    if not np.isfinite(block).all():
        raise _bad_number(rows, where)
    return block


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
    """Records -> columns: ``itemgetter`` per record, all numeric features checked as one block."""
    numeric = [spec for spec in specs if spec.is_numeric]
    feeds: dict[str, np.ndarray] = {}
    if numeric:
        names = [spec.name for spec in numeric]
        rows = (
            [tuple(r[n] for n in names) for r in records]
            if len(names) == 1
            else [*map(itemgetter(*names), records)]
        )
        block = np.ascontiguousarray(number_block(rows, lambda i, j: f"records[{i}].{names[j]}").T)
        for spec, column in zip(numeric, block, strict=True):
            feeds[spec.name] = model_input(column, spec)
    for spec in specs:
        if not spec.is_numeric:
            column = [record[spec.name] for record in records]
            feeds[spec.name] = model_input(strings(column, field_of("records", f".{spec.name}")), spec)
    return {spec.name: feeds[spec.name] for spec in specs}


def typed(column: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A checked column in the input's own type; a value that type cannot hold is refused, never wrapped."""
    dtype = NUMPY_DTYPES[spec.datatype]
    if dtype is np.float64 or dtype is np.object_:
        return column
    if dtype is np.int64:
        if not (
            np.array_equal(np.trunc(column), column) and ((column >= -(2.0**63)) & (column < 2.0**63)).all()
        ):
            raise InputError(spec.name, "expected whole numbers within the INT64 range")
    elif (np.abs(column) > _FLOAT32_MAX).any():
        raise InputError(spec.name, "expected numbers within the FP32 range")
    return column.astype(dtype)


def model_input(column: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A checked column of one feature (float64 numbers or ``str`` objects) as the model's (n, 1) input.

    The one encoding of a feature: the online routes (records, OIP tensors) and batch scoring all end here,
    so the service and a batch cannot feed a model differently.
    """
    return typed(column, spec).reshape(-1, 1)


def feeds_from_columns(
    columns: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """One (n, 1) tensor per model input from checked columns (a batch's rows that can be scored)."""
    return {
        spec.name: model_input(
            np.asarray(columns[spec.name], dtype=np.float64 if spec.is_numeric else object), spec
        )
        for spec in specs
    }


def feeds_from_records(
    records: Sequence[Mapping[str, Any]], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """One (n, 1) tensor per model input from a list of ``{feature: value}`` records."""
    if not records:
        raise InputError("records", "expected at least one record")
    _check_names(records, {spec.name for spec in specs})
    return _columns(records, specs)
