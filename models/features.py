"""Turn named feature records into ONNX input tensors, checking names, types and values.

NumPy only: the serving process uses this and must start without scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


def _column(name: str, values: list[Any], spec: TensorSpec) -> np.ndarray:
    if spec.is_numeric:
        for index, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(
                    f"records[{index}].{name}",
                    f"expected a number, got {type(value).__name__} {value!r:.40}",
                )
            if not math.isfinite(value):
                raise InputError(f"records[{index}].{name}", f"expected a finite number, got {value}")
    else:
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise InputError(
                    f"records[{index}].{name}",
                    f"expected a string, got {type(value).__name__} {value!r:.40}",
                )
    return np.array(values, dtype=NUMPY_DTYPES[spec.datatype]).reshape(-1, 1)


def feeds_from_records(
    records: Sequence[Mapping[str, Any]], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """One (n, 1) tensor per model input from a list of ``{feature: value}`` records."""
    if not records:
        raise InputError("records", "expected at least one record")
    expected = {spec.name for spec in specs}
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
    return {spec.name: _column(spec.name, [record[spec.name] for record in records], spec) for spec in specs}
