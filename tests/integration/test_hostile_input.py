"""Hostile and malformed input against a real `bentoml serve` (one worker, 127.0.0.1, a free port).

* schemathesis generates requests from the service's published OpenAPI documents (``/openapi.json``, and
  BentoML's ``/docs.json`` for ``/predict_rows``); the OIP and ``/predict`` routes publish bodies for any
  model, so the served model's own (the Open Inference Protocol's ``InferenceRequest`` with its inputs)
  replace them in the loaded document, so that schemathesis generates bodies, valid and not, that reach
  the model's checks.
* hypothesis mutates valid OIP requests by hand-written rules: wrong types, shapes, datatypes, NaN and
  huge numbers, unicode names, missing and extra fields, bodies that are not JSON.

Together at least 5,000 requests: none may get a 5xx, every 4xx must be JSON with an ``error`` message,
and every valid request must get its prediction. The parsing itself is searched far wider, without a
server, by the properties of ``parse_infer_request`` (``tests/unit/serving/test_protocol_properties.py``).
Oversized bodies and deeply nested JSON must be refused early, with the worker's resident memory measured
before and after.
"""

from __future__ import annotations

import copy
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.result import Err, Ok

from models import datasets
from tests.conftest import Registered, make_settings
from tests.integration.isolated import IsolatedService, serving

pytestmark = pytest.mark.integration

SCHEMATHESIS_REQUESTS = 1_500  # at least, over all operations and both generation modes
HAND_WRITTEN_REQUESTS = 3_600  # together: 5,100 (a sixth of it valid, each example sent twice)
DATATYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]
MIB = 1024 * 1024


@dataclass(frozen=True)
class Served:
    service: IsolatedService
    model: str
    version: str
    inputs: tuple[str, ...]
    record: dict[str, float]

    @property
    def url(self) -> str:
        return self.service.url

    def infer_path(self, name: str | None = None, version: str | None = None) -> str:
        name = self.model if name is None else name
        return (
            f"/v2/models/{name}/infer" if version is None else f"/v2/models/{name}/versions/{version}/infer"
        )


@pytest.fixture(scope="module")
def served(
    champion: Registered, split: datasets.Split, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The session's champion served by one worker (so that its memory is one process to watch)."""
    settings = make_settings(
        tmp_path_factory.mktemp("hostile") / "state",
        tracking_uri=champion.settings.resolved_tracking_uri,
        model_name=champion.settings.model_name,
        serve_workers=1,
    )
    record = datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)[0]
    with serving(settings) as service:
        metadata = httpx.get(f"{service.url}/v2/models/{settings.model_name}", timeout=10).json()
        inputs = tuple(i["name"] for i in metadata["inputs"])
        numbers = {k: float(v) for k, v in record.items()}
        yield Served(service, settings.model_name, champion.version, inputs, numbers)


# --- the verdict on one response ---------------------------------------------------------------------------


@dataclass
class Tally:
    """Statuses seen, and every answer that breaks the rules (with the request that caused it)."""

    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def record(self, describe: Callable[[], str], status: int, body: bytes) -> None:
        """Count the answer; ``describe`` (called only for a problem) says what the request was."""
        problem = problem_with(status, body)
        with self._lock:
            self.statuses[status] += 1
            if problem:
                self.problems.append(f"{problem}: {describe()[:600]} -> {status} {body[:300]!r}")

    def failed(self, describe: Callable[[], str], problem: str, answered: bool = False) -> None:
        with self._lock:
            if not answered:
                self.statuses[0] += 1  # no HTTP answer at all
            self.problems.append(f"{problem}: {describe()[:600]}")

    def report(self, name: str) -> str:
        return f"{name}: {self.requests} requests, statuses {dict(sorted(self.statuses.items()))}"


def problem_with(status: int, body: bytes) -> str | None:
    if status >= 500:
        return "server error"
    if 400 <= status < 500:
        try:
            message = json.loads(body).get("error")
        except (ValueError, AttributeError):
            return "4xx without a JSON object"
        if not isinstance(message, str) or not message:
            return "4xx without an error message"
    return None


class Pipelined:
    """Sends requests from a few threads while hypothesis draws the next ones (the server is another
    process: generation and serving overlap on the two cores); at most ``depth`` in flight."""

    def __init__(self, threads: int = 4, depth: int = 16) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads)
        self._slots = threading.BoundedSemaphore(depth)
        self._futures: list[Future[None]] = []

    def submit(self, job: Callable[[], None]) -> None:
        self._slots.acquire()
        future = self._pool.submit(job)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def __enter__(self) -> Pipelined:
        return self

    def __exit__(self, *_: object) -> None:
        self._pool.shutdown(wait=True)
        for future in self._futures:
            future.result()  # a bug in the test itself surfaces here


def run_examples(strategy: st.SearchStrategy[Any], examples: int, send: Callable[[Any], None]) -> None:
    """Draw up to ``examples`` values (deterministically) and send each once; no shrinking, no database."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def each(value: Any) -> None:
        send(value)

    with suppress(Unsatisfiable):  # nothing the schema allows in this mode (a path parameter: any string)
        each()


# --- schemathesis over the published documents -------------------------------------------------------


def infer_request_schema(inputs: tuple[str, ...]) -> dict[str, Any]:
    """The Open Inference Protocol's InferenceRequest, with this model's input names."""
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "enum": list(inputs)},
            "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
            "datatype": {"type": "string", "enum": DATATYPES},
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
        },
    }
    output = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 3, "items": tensor},
            "outputs": {"type": "array", "items": output},
        },
    }


def predict_request_schema(inputs: tuple[str, ...]) -> dict[str, Any]:
    record = {
        "type": "object",
        "properties": {name: {"type": "number"} for name in inputs},
        "required": list(inputs),
    }
    return {
        "type": "object",
        "required": ["records"],
        "properties": {"records": {"anyOf": [record, {"type": "array", "items": record, "maxItems": 3}]}},
    }


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def published_document(served: Served) -> dict[str, Any]:
    """``/openapi.json`` with the served model's own bodies in place of the generic ones it publishes (so
    that generated requests reach the model's checks), plus what only ``/docs.json`` has."""
    document: dict[str, Any] = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    bentoml_document = httpx.get(f"{served.url}/docs.json", timeout=10).json()
    paths = document["paths"]
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        assert "requestBody" in paths[path]["post"]  # published for any model: this one's, to aim at
        paths[path]["post"]["requestBody"] = json_body(infer_request_schema(served.inputs))
    paths["/predict"]["post"]["requestBody"] = json_body(predict_request_schema(served.inputs))
    for path, operations in bentoml_document["paths"].items():
        paths.setdefault(path, operations)  # /predict_rows (with its own body schema), /livez, /readyz, ...
    document.setdefault("components", {}).setdefault("schemas", {}).update(
        bentoml_document.get("components", {}).get("schemas", {})
    )
    document["servers"] = [{"url": served.url}]
    return document


def examples_for(operation: Operation) -> int:
    return 100


def strategies_for(operation: Operation, served: Served) -> list[st.SearchStrategy[Any]]:
    """Both generation modes; for a POST with path parameters, also with the served model's own name and
    version, so that the body gets parsed rather than answered 404."""
    fixed = {"name": served.model, "version": served.version}
    own = {p.name: fixed[p.name] for p in operation.path_parameters if p.name in fixed}
    strategies = []
    for mode in schemathesis.GenerationMode:
        strategies.append(operation.as_strategy(generation_mode=mode))
        if own and operation.method.upper() == "POST":
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=own))
    return strategies


Operation = schemathesis.APIOperation[Any, Any, Any, Any]


def operation_of(result: Ok[Operation] | Err[InvalidSchema]) -> Operation:
    assert isinstance(result, Ok), f"the published document is not valid OpenAPI: {result.err()}"
    return result.ok()


def test_schemathesis_over_the_published_openapi_never_gets_a_5xx(served: Served) -> None:
    schema = schemathesis.openapi.from_dict(published_document(served), config=schemathesis.Config())
    operations = [operation_of(result) for result in schema.get_all_operations()]
    assert {"POST /v2/models/{name}/infer", "POST /predict", "POST /predict_rows"} <= {
        o.label for o in operations
    }
    tally = Tally()
    sessions = threading.local()
    per_operation: Counter[str] = Counter()

    def send(case: schemathesis.Case[Any]) -> None:
        kwargs = case.as_transport_kwargs(base_url=served.url)
        per_operation[case.operation.label] += 1

        def describe() -> str:
            return case.as_curl_command(base_url=served.url)

        def job() -> None:
            if not hasattr(sessions, "session"):
                sessions.session = requests.Session()
            try:
                response = sessions.session.request(**kwargs, timeout=30)
            except requests.RequestException as exc:
                tally.failed(describe, f"no answer ({type(exc).__name__})")
                sessions.session = requests.Session()
                return
            tally.record(describe, response.status_code, response.content)

        pipeline.submit(job)

    started = time.perf_counter()
    with Pipelined() as pipeline:
        for operation in operations:
            for strategy in strategies_for(operation, served):
                run_examples(strategy, examples_for(operation), send)
    print(tally.report("schemathesis"), f"in {time.perf_counter() - started:.1f}s", dict(per_operation))
    assert tally.problems == [], f"{len(tally.problems)} problems:\n" + "\n".join(tally.problems[:20])
    assert tally.requests >= SCHEMATHESIS_REQUESTS, per_operation
    assert tally.statuses[200] > 0 and tally.statuses[400] > 0 and tally.statuses[404] > 0


# --- hand-written OIP mutations -----------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities cannot be JSON: they become the tokens NaN / Infinity below
    | st.text(max_size=12)
    | st.sampled_from(
        [1e308, -1e308, 2**63, -(2**63) - 1, 2**64, 10**30, 5e-324, -0.0, "1.5", "NaN", "", "🙂"]
    )
)
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
Body = dict[str, Any]
Mutation = Callable[[st.DrawFn, Body], Any]


def valid_body(served: Served, rows: list[dict[str, float]], request_id: str | None = None) -> Body:
    body: Body = {
        "inputs": [
            {"name": name, "shape": [len(rows), 1], "datatype": "FP64", "data": [row[name] for row in rows]}
            for name in served.inputs
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def _tensor(draw: st.DrawFn, body: Body) -> dict[str, Any]:
    return draw(st.sampled_from(body["inputs"]))


def drop_input(draw: st.DrawFn, body: Body) -> Body:
    body["inputs"].remove(_tensor(draw, body))
    return body


def duplicate_input(draw: st.DrawFn, body: Body) -> Body:
    body["inputs"].append(copy.deepcopy(_tensor(draw, body)))
    return body


def unknown_input(draw: st.DrawFn, body: Body) -> Body:
    extra = copy.deepcopy(_tensor(draw, body))
    extra["name"] = draw(st.text(min_size=0, max_size=30))
    body["inputs"].insert(draw(st.integers(0, len(body["inputs"]))), extra)
    return body


def bad_name(draw: st.DrawFn, body: Body) -> Body:
    _tensor(draw, body)["name"] = draw(ANY_JSON)
    return body


def bad_datatype(draw: st.DrawFn, body: Body) -> Body:
    _tensor(draw, body)["datatype"] = draw(st.sampled_from(DATATYPES) | st.text(max_size=10) | ANY_JSON)
    return body


def bad_shape(draw: st.DrawFn, body: Body) -> Body:
    dims = st.integers(-3, 5) | st.sampled_from([0, 2**31, 2**63, 10**30, 1.0, True])
    _tensor(draw, body)["shape"] = draw(st.lists(dims, max_size=4) | ANY_JSON)
    return body


def bad_value(draw: st.DrawFn, body: Body) -> Body:
    data = _tensor(draw, body)["data"]
    data[draw(st.integers(0, len(data) - 1))] = draw(ANY_JSON)
    return body


def bad_length(draw: st.DrawFn, body: Body) -> Body:
    tensor = _tensor(draw, body)
    tensor["data"] = tensor["data"] * draw(st.integers(0, 3)) + draw(
        st.lists(st.floats(-1e6, 1e6), max_size=2)
    )
    return body


def nested_data(draw: st.DrawFn, body: Body) -> Body:
    tensor = _tensor(draw, body)
    depth = draw(st.integers(1, 4))
    values = tensor["data"]
    for _ in range(depth):
        values = [[v] for v in values] if draw(st.booleans()) else [values]
    tensor["data"] = values
    return body


def not_a_list(draw: st.DrawFn, body: Body) -> Body:
    _tensor(draw, body)["data"] = draw(ANY_JSON.filter(lambda v: not isinstance(v, list)))
    return body


def missing_field(draw: st.DrawFn, body: Body) -> Body:
    tensor = _tensor(draw, body)
    del tensor[draw(st.sampled_from(sorted(tensor)))]
    return body


def extra_field(draw: st.DrawFn, body: Body) -> Body:
    target = draw(st.sampled_from([body, _tensor(draw, body)]))
    target[draw(st.text(max_size=12))] = draw(ANY_JSON)
    return body


def bad_top_level(draw: st.DrawFn, body: Body) -> Body:
    key = draw(st.sampled_from(["id", "outputs", "parameters", "inputs"]))
    if key == "outputs":
        body[key] = draw(
            st.lists(st.fixed_dictionaries({"name": st.text(max_size=15)}), max_size=3) | ANY_JSON
        )
    else:
        body[key] = draw(ANY_JSON)
    return body


def not_an_object(draw: st.DrawFn, body: Body) -> Any:
    return draw(ANY_JSON.filter(lambda v: not isinstance(v, dict)))


MUTATIONS: list[Mutation] = [
    drop_input, duplicate_input, unknown_input, bad_name, bad_datatype, bad_shape, bad_value, bad_length,
    nested_data, not_a_list, missing_field, extra_field, bad_top_level, not_an_object,
]  # fmt: skip


def encode(draw: st.DrawFn, body: Any) -> bytes:
    """JSON, mostly; sometimes JSON with the NaN / Infinity tokens, cut short, or not UTF-8 at all."""
    text = json.dumps(body, allow_nan=True)  # NaN and infinities drawn above become bare tokens
    how = draw(st.sampled_from(["json"] * 6 + ["nan", "cut", "latin-1", "bom", "binary"]))
    if how == "nan" and "0" in text:
        text = text.replace("0", draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"])), 1)
    elif how == "cut":
        text = text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    elif how == "latin-1":
        return (text + draw(st.text(max_size=5))).encode("utf-8") + b"\xe9\xff"
    elif how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    elif how == "binary":
        return draw(st.binary(max_size=64))
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Attempt:
    """One generated body, sent to both OIP infer routes (two requests)."""

    paths: tuple[str, str]
    body: bytes
    valid: bool
    rows: int = 0
    request_id: str | None = None

    def describe(self, path: str) -> str:
        return f"POST {path} {self.body[:500]!r}"


def finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def valid_attempts(served: Served) -> st.SearchStrategy[Attempt]:
    @st.composite
    def build(draw: st.DrawFn) -> Attempt:
        count = draw(st.integers(1, 4))
        rows = [{name: draw(finite(0, 1e6)) for name in served.inputs} for _ in range(count)]
        request_id = draw(st.none() | st.text(max_size=20))
        body = json.dumps(valid_body(served, rows, request_id)).encode()
        paths = (served.infer_path(), served.infer_path(version=served.version))
        return Attempt(paths, body, True, count, request_id)

    return build()


def well_formed(body: Any) -> bool:
    tensors = body.get("inputs") if isinstance(body, dict) else None
    return (
        isinstance(tensors, list)
        and bool(tensors)
        and all(isinstance(t, dict) and isinstance(t.get("data"), list) and t["data"] for t in tensors)
    )


def hostile_attempts(served: Served) -> st.SearchStrategy[Attempt]:
    @st.composite
    def build(draw: st.DrawFn) -> Attempt:
        body: Any = valid_body(served, [served.record] * draw(st.integers(1, 3)))
        for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
            # the others change one tensor of a request still shaped like one
            anywhere = mutation is not_an_object or (mutation is bad_top_level and isinstance(body, dict))
            if anywhere or well_formed(body):
                body = mutation(draw, body)
        name = draw(st.sampled_from([served.model] * 8 + ["", "other", "ünïcødé-模型", "../" + served.model]))
        version = draw(st.sampled_from([served.version] * 3 + ["0", "999", "v1 "]))
        paths = (served.infer_path(name or "%20"), served.infer_path(name or "%20", version))
        return Attempt(paths, encode(draw, body), False)

    return build()


def check_prediction(attempt: Attempt, response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return f"a valid request got {response.status_code}"
    answer = response.json()
    label = next(o for o in answer["outputs"] if o["name"] == "label")
    if label["shape"] != [attempt.rows, 1] or answer.get("id") != attempt.request_id:
        return f"wrong answer {answer}"
    return None


def test_hand_written_oip_requests_never_get_a_5xx_and_valid_ones_are_answered(served: Served) -> None:
    tally = Tally()
    headers = {"content-type": "application/json"}
    valid = HAND_WRITTEN_REQUESTS // 6

    def post(attempt: Attempt, path: str) -> None:
        def describe() -> str:
            return attempt.describe(path)

        try:
            response = client.post(path, content=attempt.body, headers=headers)
        except httpx.HTTPError as exc:
            tally.failed(describe, f"no answer ({type(exc).__name__})")
            return
        tally.record(describe, response.status_code, response.content)
        problem = check_prediction(attempt, response) if attempt.valid else None
        if problem:
            tally.failed(describe, problem, answered=True)

    def send(attempt: Attempt) -> None:
        for path in attempt.paths:
            pipeline.submit(lambda path=path: post(attempt, path))  # type: ignore[misc]

    started = time.perf_counter()
    with httpx.Client(base_url=served.url, timeout=30) as client, Pipelined() as pipeline:
        run_examples(valid_attempts(served), valid // 2, send)
        run_examples(hostile_attempts(served), (HAND_WRITTEN_REQUESTS - valid) // 2, send)
    print(tally.report("hand-written OIP"), f"in {time.perf_counter() - started:.1f}s")
    assert tally.problems == [], f"{len(tally.problems)} problems:\n" + "\n".join(tally.problems[:20])
    assert tally.requests >= HAND_WRITTEN_REQUESTS
    refused = sum(n for status, n in tally.statuses.items() if 400 <= status < 500)
    assert tally.statuses[200] >= valid and refused > HAND_WRITTEN_REQUESTS // 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("datatype", ["FP64"]), ("datatype", {"type": "FP64"}), ("name", ["mean_radius"]), ("shape", {"n": 1})],
)
def test_unhashable_values_in_a_tensor_are_a_400(served: Served, field: str, value: Any) -> None:
    """Found by the generated run: a JSON list or object where a string is expected."""
    body = valid_body(served, [served.record])
    body["inputs"][0][field] = value
    response = httpx.post(f"{served.url}{served.infer_path()}", json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert f"inputs[0].{field}" in response.json()["error"]


# --- oversized and deeply nested bodies: refused early, memory flat -----------------------------------


@dataclass
class PeakRss:
    """Samples the worker's resident memory every few milliseconds while a request runs."""

    service: IsolatedService
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self.peak = self.service.worker_rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.service.worker_rss())

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def streamed(total: int, chunk: bytes) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)


def declared_length_only(url: str, path: str, length: int) -> tuple[bytes, float]:
    """Send only the headers of a request that announces ``length`` bytes; return the answer and its delay."""
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {length}\r\nConnection: close\r\n\r\n".encode())
        while b"}" not in answer and (chunk := sock.recv(65536)):  # the whole (small) JSON answer
            answer += chunk
    return answer, time.perf_counter() - started


ROUTES = ["/v2/models/{model}/infer", "/predict", "/predict_rows"]


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def test_oversized_bodies_are_refused_early_without_memory_growth(served: Served) -> None:
    limit = served.service.settings.max_request_bytes
    before = served.service.worker_rss()
    with PeakRss(served.service) as watch, httpx.Client(base_url=served.url, timeout=60) as client:
        for template in ROUTES:
            path = template.format(model=served.model)
            answer, delay = declared_length_only(served.url, path, 10 * 1024 * MIB)  # 10 GiB announced
            assert answer.startswith(b"HTTP/1.1 413") and b'"error"' in answer and delay < 2, answer
            for _ in range(5):  # chunked, no length: refused once the limit is crossed while streaming
                started = time.perf_counter()
                response = client.post(path, content=streamed(256 * MIB, b"7" * MIB))
                assert response.status_code == 413, response.text
                assert "larger than the limit" in response.json()["error"]
                assert time.perf_counter() - started < 10
            response = client.post(
                path, content=b" " * (limit + 1), headers={"content-type": "application/json"}
            )
            assert response.status_code == 413
    after = served.service.worker_rss()
    print(
        f"oversized: RSS before {mib(before)}, peak {mib(watch.peak)}, after {mib(after)}; limit {mib(limit)}"
    )
    assert watch.peak - before < 4 * limit, (before, watch.peak)  # never more than a few bodies' worth
    assert after - before < 2 * limit, (before, after)
    assert httpx.get(f"{served.url}/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("depth", [100_000, 1_000_000])
def test_deeply_nested_json_is_refused_without_memory_growth(served: Served, depth: int) -> None:
    before = served.service.worker_rss()
    bodies = {
        "lists": b"[" * depth,
        "objects": b'{"a":' * depth,
        "inside a tensor": b'{"inputs": [{"name": "mean_radius", "shape": [1], "datatype": "FP64", "data": '
        + b"[" * depth,
    }
    with PeakRss(served.service) as watch, httpx.Client(base_url=served.url, timeout=30) as client:
        for template in ROUTES:
            path = template.format(model=served.model)
            for kind, body in bodies.items():
                started = time.perf_counter()
                response = client.post(path, content=body, headers={"content-type": "application/json"})
                elapsed = time.perf_counter() - started
                assert response.status_code == 400, (path, kind, response.status_code, response.text[:300])
                assert response.json()["error"], (path, kind)
                assert elapsed < 2, (path, kind, elapsed)
    after = served.service.worker_rss()
    print(f"nested x{depth}: RSS before {mib(before)}, peak {mib(watch.peak)}, after {mib(after)}")
    assert watch.peak - before < 64 * MIB and after - before < 32 * MIB, (before, watch.peak, after)


def test_many_valid_rows_in_one_request_are_served(served: Served) -> None:
    """The other side of the limit: a large body under it is a prediction, not a refusal."""
    rows = [served.record] * 20_000
    body = json.dumps(valid_body(served, rows)).encode()
    assert len(body) < served.service.settings.max_request_bytes
    response = httpx.post(f"{served.url}{served.infer_path()}", content=body, timeout=60)
    assert response.status_code == 200, response.text[:300]
    label = next(o for o in response.json()["outputs"] if o["name"] == "label")
    assert label["shape"] == [20_000, 1] and not any(math.isnan(v) for v in label["data"])
