"""The OIP request parser under generated input: an answer or an ``InputError``, never anything else.

``parse_infer_request`` is what every infer route calls, so a property here covers the routes' parsing
without a server: for any JSON value, and for valid requests with one part replaced by any JSON value (or
by raw bytes behind ``binary_data_size``), it either returns one ``(rows, 1)`` tensor per model input of the
input's type or raises ``InputError`` with a message; a valid request gives back exactly its values. The
real server's side (status codes, JSON errors, the answers) is ``tests/integration/test_hostile_input.py``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.features import NUMPY_DTYPES, InputError, TensorSpec
from serving.protocol import InferRequest, parse_infer_request

INPUTS = (
    TensorSpec("radius", "FP64"),
    TensorSpec("count", "INT64"),
    TensorSpec("plan", "BYTES"),
)
DATATYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", ""]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from([1e308, -1e308, 2**63, -(2**63) - 1, 2**64, 10**30, 5e-324, -0.0, "NaN", "🙂"])
)
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
EXAMPLES = settings(
    max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    rows = draw(st.integers(min_value=1, max_value=4))
    values: dict[str, list[Any]] = {
        "radius": draw(st.lists(st.floats(-1e6, 1e6), min_size=rows, max_size=rows)),
        "count": draw(st.lists(st.integers(-(2**40), 2**40), min_size=rows, max_size=rows)),
        "plan": draw(st.lists(st.text(max_size=6), min_size=rows, max_size=rows)),
    }
    tensors = [
        {"name": spec.name, "shape": [rows, 1], "datatype": spec.datatype, "data": values[spec.name]}
        for spec in INPUTS
    ]
    order = draw(st.permutations(range(len(tensors))))
    body: dict[str, Any] = {"inputs": [tensors[i] for i in order]}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=10))
    return body, values


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """A valid request with one part replaced, dropped, added or sent as raw bytes."""
    body, _ = draw(valid_requests())
    body = copy.deepcopy(body)
    tensor = draw(st.sampled_from(body["inputs"]))
    key = draw(st.sampled_from(["name", "shape", "datatype", "data", "parameters", "extra"]))
    binary = b""
    how = draw(st.sampled_from(["replace", "drop", "binary", "duplicate", "top-level"]))
    if how == "replace":
        tensor[key] = draw(ANY_JSON | st.sampled_from(DATATYPES))
    elif how == "drop":
        tensor.pop(key, None)
    elif how == "binary":
        size = draw(st.integers(min_value=-2, max_value=64) | ANY_JSON)
        if draw(st.booleans()):
            tensor.pop("data")
        tensor["parameters"] = {"binary_data_size": size}
        binary = draw(st.binary(max_size=80))
    elif how == "duplicate":
        body["inputs"].append(copy.deepcopy(tensor))
    else:
        body[draw(st.sampled_from(["inputs", "id", "outputs", "parameters"]))] = draw(ANY_JSON)
    return body, binary


def well_formed(parsed: InferRequest) -> None:
    assert list(parsed.feeds) == [spec.name for spec in INPUTS]
    for spec in INPUTS:
        feed = parsed.feeds[spec.name]
        assert feed.shape == (parsed.rows, 1)
        if spec.is_numeric:
            assert feed.dtype == np.dtype(NUMPY_DTYPES[spec.datatype]) and np.isfinite(feed).all()
        else:
            assert feed.dtype == object and all(isinstance(v, str) for v in feed.ravel())


@EXAMPLES
@given(valid_requests())
def test_a_valid_request_gives_back_its_values(case: tuple[dict[str, Any], dict[str, list[Any]]]) -> None:
    body, values = case
    parsed = parse_infer_request(body, INPUTS)
    well_formed(parsed)
    assert parsed.id == body.get("id")
    for spec in INPUTS:
        assert parsed.feeds[spec.name].ravel().tolist() == values[spec.name]


@EXAMPLES
@given(st.one_of(mutated_requests(), ANY_JSON.map(lambda body: (body, b""))))
def test_any_other_request_is_parsed_or_refused_with_an_input_error(case: tuple[Any, bytes]) -> None:
    body, binary = case
    try:
        parsed = parse_infer_request(body, INPUTS, binary)
    except InputError as exc:
        assert exc.field and exc.problem  # the 400's message names the field and what was expected
    else:
        well_formed(parsed)


def _tensor(name: str, datatype: str = "FP64", data: Any = 1.0) -> dict[str, Any]:
    return {"name": name, "shape": [1, 1], "datatype": datatype, "data": [data]}


def test_an_input_given_twice_is_refused_by_name() -> None:
    body = {"inputs": [_tensor("radius"), _tensor("radius"), _tensor("count", "INT64", 1)]}
    with pytest.raises(InputError, match=r"^inputs\[1\]\.name: input 'radius' given twice$"):
        parse_infer_request(body, INPUTS)


def test_more_tensors_than_the_model_has_inputs_are_refused_before_any_is_read() -> None:
    """20,000 copies of one input (1.5 MB, a worker busy 19 s when each was compared with those before)."""
    body = {"inputs": [_tensor("radius") for _ in range(20_000)]}
    with pytest.raises(InputError, match=r"^inputs: 20000 tensors, but the model has 3 inputs$"):
        parse_infer_request(body, INPUTS)


NUMERIC_INPUTS = (TensorSpec("radius", "FP64"), TensorSpec("count", "INT64"), TensorSpec("area", "FP32"))
VALUES = (
    st.floats()
    | st.integers(-(2**70), 2**70)
    | st.booleans()
    | st.none()
    | st.text(max_size=3)
    | st.lists(st.floats(), max_size=2)
)


@st.composite
def common_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Requests of the common shape (a tensor per input, in order, [n, 1]), with any values, some not of
    the shape after all (a length or a datatype off)."""
    rows = draw(st.integers(min_value=1, max_value=3))
    tensors = []
    for spec in NUMERIC_INPUTS:
        data = draw(st.lists(VALUES, min_size=rows, max_size=rows) | st.lists(st.floats(), max_size=4))
        datatype = draw(st.sampled_from([spec.datatype, "FP64", "INT32", "BYTES", "BOOL"]))
        tensors.append({"name": spec.name, "shape": [rows, 1], "datatype": datatype, "data": data})
    return {"inputs": tensors}


def _parsed_or_refused(body: dict[str, Any]) -> Any:
    try:
        parsed = parse_infer_request(copy.deepcopy(body), NUMERIC_INPUTS)
    except InputError as exc:
        return str(exc)
    return parsed.rows, {k: (v.dtype.str, v.shape, v.tolist()) for k, v in parsed.feeds.items()}


@given(common_requests())
@EXAMPLES
def test_the_common_request_is_read_as_the_general_path_reads_it(body: dict[str, Any]) -> None:
    """The table-driven path for the common request gives what the general one gives: the same feeds, or
    the same refusal word for word."""
    from serving import protocol

    common = _parsed_or_refused(body)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol, "_common_feeds", lambda tensors, inputs: None)
        general = _parsed_or_refused(body)
    assert common == general


def test_the_common_request_takes_the_table_driven_path() -> None:
    from serving import protocol

    body = {
        "inputs": [
            {"name": s.name, "shape": [2, 1], "datatype": s.datatype, "data": [1, 2]} for s in NUMERIC_INPUTS
        ]
    }
    found = protocol._common_feeds(body["inputs"], NUMERIC_INPUTS)
    assert found is not None and found[1] == 2
    assert found[0]["count"].dtype == np.int64 and found[0]["area"].dtype == np.float32
    assert protocol._common_feeds(body["inputs"][::-1], NUMERIC_INPUTS) is None  # another order: general
