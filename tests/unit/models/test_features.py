import math
from typing import Any

import numpy as np
import pytest

from models.features import Datatype, InputError, TensorSpec, feeds_from_records

SPECS = (TensorSpec("size", "FP64"), TensorSpec("colour", "BYTES"))


def test_records_become_one_column_per_input() -> None:
    feeds = feeds_from_records([{"size": 1, "colour": "red"}, {"size": 2.5, "colour": "blue"}], SPECS)
    assert feeds["size"].dtype == np.float64
    assert feeds["size"].tolist() == [[1.0], [2.5]]
    assert feeds["colour"].tolist() == [["red"], ["blue"]]


@pytest.mark.parametrize(
    ("records", "field", "problem"),
    [
        ([], "records", "at least one record"),
        ([{"size": 1}], "records[0]", "missing features ['colour']"),
        ([{"size": 1, "colour": "r", "extra": 0}], "records[0]", "unknown features ['extra']"),
        ([{"size": "big", "colour": "r"}], "records[0].size", "expected a number, got str"),
        ([{"size": True, "colour": "r"}], "records[0].size", "expected a number, got bool"),
        ([{"size": math.nan, "colour": "r"}], "records[0].size", "expected a finite number"),
        ([{"size": 1, "colour": "r"}, {"size": math.inf, "colour": "r"}], "records[1].size", "finite"),
        ([{"size": 10**400, "colour": "r"}], "records[0].size", "expected a finite number"),
        # an integer past int64 but within float range is a number; the null after it is the bad value
        (
            [{"size": -(2**63) - 1, "colour": "r"}, {"size": None, "colour": "r"}],
            "records[1].size",
            "got NoneType",
        ),
        ([{"size": 1, "colour": 3}], "records[0].colour", "expected a string, got int"),
        (["not a record"], "records[0]", "expected an object"),
    ],
)
def test_bad_records_name_the_field_and_the_expectation(records: list[Any], field: str, problem: str) -> None:
    with pytest.raises(InputError) as error:
        feeds_from_records(records, SPECS)
    assert error.value.field == field
    assert problem in error.value.problem


@pytest.mark.parametrize(
    ("datatype", "value", "problem"),
    [
        ("INT64", 2.5, "whole numbers within the INT64 range"),
        ("INT64", 2**63, "whole numbers within the INT64 range"),
        ("INT64", 1e30, "whole numbers within the INT64 range"),
        ("FP32", 1e39, "within the FP32 range"),
    ],
)
def test_a_value_the_input_type_cannot_hold_is_refused_not_wrapped(
    datatype: Datatype, value: float, problem: str
) -> None:
    with pytest.raises(InputError) as error:
        feeds_from_records([{"count": value}], (TensorSpec("count", datatype),))
    assert error.value.field == "count"
    assert problem in error.value.problem


def test_values_the_input_type_holds_keep_their_value() -> None:
    feeds = feeds_from_records(
        [{"count": -(2**62), "ratio": 1e30}], (TensorSpec("count", "INT64"), TensorSpec("ratio", "FP32"))
    )
    assert feeds["count"].tolist() == [[-(2**62)]]
    assert feeds["ratio"].dtype == np.float32
