"""Pure parts of the post-deploy checks: reading /metrics and judging a bake window."""

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from flows.checks import DeployChecks, Replica, bake_verdict, traffic_snapshot, verify_replica


def metrics_text(ok: int, errors: int, under_5ms: int, under_100ms: int) -> str:
    """BentoML's /metrics as it looks, reduced to the samples the bake check reads."""
    total = under_5ms + under_100ms
    request = 'bentoml_service_request_total{{endpoint="/predict",http_response_code="{code}"}} {value}'
    bucket = 'bentoml_service_request_duration_seconds_bucket{{endpoint="/predict",le="{le}"}} {value}'
    return "\n".join(
        [
            "# TYPE bentoml_service_request_total counter",
            request.format(code=200, value=float(ok)),
            request.format(code=500, value=float(errors)),
            "# TYPE bentoml_service_request_duration_seconds histogram",
            bucket.format(le="0.005", value=float(under_5ms)),
            bucket.format(le="0.1", value=float(total)),
            bucket.format(le="+Inf", value=float(total)),
            "",
        ]
    )


BEFORE = traffic_snapshot(metrics_text(ok=100, errors=0, under_5ms=90, under_100ms=10))
CHECKS = DeployChecks(max_error_rate=0.01, bake_p99_ms=50)


def test_snapshot_sums_requests_errors_and_buckets() -> None:
    assert (BEFORE.requests, BEFORE.errors) == (100, 0)
    assert BEFORE.buckets == {0.005: 90, 0.1: 100, float("inf"): 100}


def test_bake_passes_on_fast_clean_traffic() -> None:
    after = traffic_snapshot(metrics_text(ok=300, errors=0, under_5ms=290, under_100ms=10))
    result = bake_verdict(BEFORE, after, 5, CHECKS)
    assert result.passed and result.value == "200 requests, error rate 0.00%, p99 <= 5 ms"


def test_bake_fails_on_errors_or_slowness() -> None:
    errors = traffic_snapshot(metrics_text(ok=290, errors=10, under_5ms=290, under_100ms=10))
    failing = bake_verdict(BEFORE, errors, 5, CHECKS)
    assert not failing.passed and "error rate 5.00%" in failing.value
    slow = traffic_snapshot(metrics_text(ok=300, errors=0, under_5ms=190, under_100ms=110))
    result = bake_verdict(BEFORE, slow, 5, CHECKS)
    assert not result.passed and "p99 <= 100 ms" in result.value


def test_bake_without_traffic_is_not_a_failure() -> None:
    assert bake_verdict(BEFORE, BEFORE, 5, DeployChecks()).passed


def test_deploy_checks_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="probe_seconds"):
        DeployChecks(probe_seconds=3)  # type: ignore[call-arg]


class SlowModelHandler(http.server.BaseHTTPRequestHandler):
    """A replica that is live, ready and reports v7 at once, but answers a prediction only after 2 s."""

    def do_GET(self) -> None:
        self._answer(b'{"versions": ["7"]}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        time.sleep(2)
        self._answer(b"{}")

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_check_request_not_answered_in_time_is_a_latency_failure() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowModelHandler)
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]  # client gave up
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        replica = Replica(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=0.5)
        checks = DeployChecks(ready_timeout_s=5, version_timeout_s=5, version_streak=1)
        golden = {"records": [{"x": 1.0}], "labels": [1], "probabilities": [[0.0, 1.0]]}
        results = verify_replica(replica, "m", "7", golden, checks)
    finally:
        server.shutdown()
        server.server_close()
    assert [(r.name, r.passed) for r in results] == [("ready", True), ("version", True), ("latency", False)]
    assert "the golden check's request was not answered in time (ReadTimeout)" in results[-1].value


GOLDEN = {"records": [{"x": 1.0}], "labels": [1], "probabilities": [[0.1, 0.9]]}


@contextlib.contextmanager
def fake_worker(answer: Callable[[int], tuple[int, bytes]]) -> Iterator[Replica]:
    """A worker answering the n-th POST (from 1) with ``answer(n)``: status and body."""
    answered = {"n": 0}

    class Worker(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            answered["n"] += 1
            status, body = answer(answered["n"])
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Worker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Replica(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def served_by(version: str) -> bytes:
    return (
        b'{"model_version": "' + version.encode() + b'", "predictions": [{"label": 1, "probabilities": '
        b'{"0": 0.1, "1": 0.9}}]}'
    )


def test_the_golden_check_waits_for_a_worker_still_loading_its_first_model() -> None:
    """503 (the worker is loading) is asked again within the wait; the answer is then judged as usual."""
    from flows.checks import check_golden

    asked: list[int] = []

    def loading_for(n: int) -> Callable[[int], tuple[int, bytes]]:
        def answer(i: int) -> tuple[int, bytes]:
            asked.append(i)
            return (503, b'{"error": "model: not loaded yet"}') if i <= n else (200, served_by("2"))

        return answer

    with fake_worker(loading_for(3)) as replica:
        assert check_golden(replica, "m", GOLDEN, "2", 1e-6, loading_s=10).passed
        assert asked[-1] == 4
    with fake_worker(loading_for(10_000)) as replica:  # never loads: refused after the wait, as before
        refused = check_golden(replica, "m", GOLDEN, "2", 1e-6, loading_s=0.5)
        assert not refused.passed and refused.value == "HTTP 503"


def test_the_golden_check_asks_again_while_a_worker_still_serves_the_version_before() -> None:
    """After a swap one worker can be a poll behind the one the version check asked: asked again."""
    from flows.checks import check_golden

    asked: list[int] = []

    def behind_for(n: int) -> Callable[[int], tuple[int, bytes]]:
        def answer(i: int) -> tuple[int, bytes]:
            asked.append(i)
            return 200, served_by("1" if i <= n else "2")

        return answer

    with fake_worker(behind_for(2)) as replica:
        assert check_golden(replica, "m", GOLDEN, "2", 1e-6, loading_s=10).passed
        assert asked[-1] == 3
    with fake_worker(behind_for(10_000)) as replica:  # never swaps: refused after the wait, naming it
        refused = check_golden(replica, "m", GOLDEN, "2", 1e-6, loading_s=0.5)
        assert not refused.passed and refused.value.startswith("v1,")
