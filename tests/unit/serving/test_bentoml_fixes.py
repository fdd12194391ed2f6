"""BentoML fixes: the cancelling timeout middleware (no timer left per request), a listener per worker."""

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bentoml._internal.server.http import traffic

from serving import bentoml_fixes
from serving.bentoml_fixes import CancellingTimeoutMiddleware


def app_taking(seconds: float, body: bytes = b"ok") -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(seconds)  # a started response is not cut by the timeout
        await send({"type": "http.response.body", "body": body})

    return app


async def call(middleware: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware({"type": "http", "method": "GET", "path": "/"}, receive, send)
    return sent


def test_a_fast_request_passes_through_and_leaves_no_timer() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], int]:
        middleware = CancellingTimeoutMiddleware(app_taking(0.0), timeout=60)
        for _ in range(200):
            sent = await call(middleware)
        loop = asyncio.get_running_loop()
        pending = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        return sent, len(pending)

    sent, pending = asyncio.run(scenario())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert pending == 0  # BentoML's own leaves one 60 s timer per request


def test_bentomls_middleware_leaves_a_timer_per_request() -> None:
    async def scenario() -> int:
        middleware = bentoml_fixes.bentoml_timeout_middleware()(app_taking(0.0), timeout=60)
        for _ in range(50):
            await call(middleware)
        loop = asyncio.get_running_loop()
        return len([h for h in loop._scheduled if not h.cancelled()])  # type: ignore[attr-defined]

    assert asyncio.run(scenario()) == 50  # the leak the fix removes


def test_no_response_in_time_is_a_504_and_a_started_response_finishes() -> None:
    slow = asyncio.run(call(CancellingTimeoutMiddleware(app_taking(0.5), timeout=0.1)))
    assert slow[0]["status"] == 504
    started = asyncio.run(call(CancellingTimeoutMiddleware(app_taking(0.06, b"done"), timeout=0.1)))
    assert started[0]["status"] == 200 and started[-1]["body"] == b"done"


def test_on_the_pinned_release_every_patch_is_applied() -> None:
    patches = bentoml_fixes.install()
    assert [(p.name, p.applied) for p in patches] == [
        (bentoml_fixes.TIMEOUT_PATCH, True),
        (bentoml_fixes.LISTENER_PATCH, True),
        (bentoml_fixes.ORDER_PATCH, True),
    ], [p.line() for p in patches]
    current: Any = traffic.TimeoutMiddleware
    assert current is CancellingTimeoutMiddleware  # the class BentoML builds its stack from


def test_on_another_release_nothing_is_patched_and_the_report_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Metadata:
        @staticmethod
        def version(name: str) -> str:
            return "1.4.40"

    monkeypatch.setattr(bentoml_fixes, "metadata", Metadata)
    monkeypatch.setattr(traffic, "TimeoutMiddleware", bentoml_fixes.bentoml_timeout_middleware())
    before: Any = traffic.TimeoutMiddleware
    patches = bentoml_fixes.install()
    assert [p.applied for p in patches] == [False, False, False]
    assert all("bentoml 1.4.40 is installed and the fix was written for 1.4.39" in p.line() for p in patches)
    assert traffic.TimeoutMiddleware is before


def test_a_changed_signature_is_left_alone_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    class Reworked:
        def __init__(self, app: Any, timeout: float, grace: float) -> None: ...

    monkeypatch.setattr(traffic, "TimeoutMiddleware", Reworked)
    timeout, listener, _ = bentoml_fixes.install()
    assert not timeout.applied and "signature changed" in timeout.line(), timeout
    assert listener.applied
    current: Any = traffic.TimeoutMiddleware
    assert current is Reworked


def test_each_worker_gets_its_own_listener_and_the_shared_one_stops() -> None:
    shared = socket.socket()
    shared.bind(("127.0.0.1", 0))
    shared.listen(16)
    address = shared.getsockname()
    own = [bentoml_fixes.own_listener(shared) for _ in range(2)]  # two workers
    try:
        for sock in own:
            assert sock.getsockname() == address
            sock.listen(128)
            sock.setblocking(False)
        clients = [socket.create_connection(address, timeout=5) for _ in range(32)]
        time.sleep(0.1)
        accepted = [len(list(_accept_all(sock))) for sock in own]
        assert sum(accepted) == 32 and min(accepted) > 0  # spread over both; none left on the shared one
        shared.setblocking(False)
        with pytest.raises(OSError):
            shared.accept()
        for client in clients:
            client.close()
    finally:
        for sock in (*own, shared):
            sock.close()


def _accept_all(sock: socket.socket) -> Iterator[socket.socket]:
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return
        conn.close()
        yield conn


def test_a_unix_socket_stays_shared(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as shared:
        shared.bind(str(tmp_path / "s.sock"))
        assert bentoml_fixes.own_listener(shared) is shared


def test_install_wraps_uvicorn_once() -> None:
    import uvicorn

    assert all(p.applied for p in bentoml_fixes.install())
    wrapped = uvicorn.Server.run
    assert all(p.applied for p in bentoml_fixes.install()) and uvicorn.Server.run is wrapped
    assert hasattr(wrapped, "__wrapped__")


def test_the_services_own_middlewares_run_right_after_bentomls_request_metrics() -> None:
    from starlette.middleware import Middleware

    def named(name: str) -> type:
        return type(name, (), {})

    metrics, tracing, timeout, context = (named(n) for n in ("RunnerTrafficMetricsMiddleware", "Otel",
                                                              "Timeout", "Context"))  # fmt: skip
    fast, edge = named("FastPath"), named("JsonError")
    classes = (metrics, tracing, timeout, fast, edge, context)
    built = [Middleware(c) for c in classes]  # type: ignore[arg-type]  # stand-ins: only their order counts
    order = [m.cls for m in bentoml_fixes.own_middleware_first(built, [fast, edge])]
    assert order == [metrics, fast, edge, tracing, timeout, context]
    without_metrics = [m.cls for m in bentoml_fixes.own_middleware_first(built[1:], [fast, edge])]
    assert without_metrics == [fast, edge, tracing, timeout, context]
