"""Three documented fixes to BentoML 1.4.39's serving path, installed before the service's app is built.

1. The per-request timer. BentoML's ``TimeoutMiddleware`` (``bentoml/_internal/server/http/traffic.py``) arms
``loop.call_later(timeout, ...)`` for every request and never cancels it, and runs each request as an extra
Task. Every request's timer, future and closure (about 20 objects) then live for the whole timeout: at
hundreds of requests a second that is tens of thousands of live objects, which the garbage collector walks
in gen-2 collections of 150-300 ms, the p99 of the service. ``CancellingTimeoutMiddleware`` keeps the
semantics (504 if the response has not started within ``timeout``; a started response is not cut) with
``asyncio.timeout``, whose timer is cancelled when the request ends, and no extra Task.

BentoML looks the class up when it builds the middleware stack, so replacing the module attribute before
``to_asgi()`` is enough.

2. The balance between workers. BentoML's arbiter binds one listening socket and every worker accepts from
it. uvloop (libuv) accepts every pending connection in one go when the socket becomes readable, so when a
client opens its pool (8 connections within a millisecond) the first worker to wake takes all of them and
the other stays idle: 1,250 req/s and p99 12.6 ms instead of ~2,200 req/s and ~9 ms. ``own_listener`` gives
each worker a socket of its own on the same address with ``SO_REUSEPORT``, so the kernel spreads new
connections over the workers' sockets, and stops the shared one listening (all workers do; the arbiter
never accepts on it). A worker's socket starts listening only when uvicorn starts serving, after the
service has loaded and self-tested its model, so no connection reaches a worker that is not ready; a
killed worker's socket leaves the group with it and its replacement joins when ready. Installed by
wrapping ``uvicorn.Server.run``, which the worker calls with the shared socket after importing the service.

3. The place of the service's own middlewares. BentoML puts them inside its tracing (OpenTelemetry) and
timeout middlewares, so every request, also one the service answers at once, passed both: a span check,
an ``asyncio.timeout`` armed and cancelled, and two more wrappers of its ``send``. ``own_middleware_first``
puts them right after BentoML's request metrics instead (so ``bentoml_service_request_*`` still counts every
request, and the rollout's bake check reads it), in their own order, the rest of BentoML's list after them
unchanged. The service's fast path (``serving/fastpath.py``) then answers its routes after the metrics
middleware alone; a request it passes on meets the tracing, the timeout and the routes as before. Measured
with the fast path, single rows at 1 / 8 / 32 connections: 1.10x-1.15x the req/s (figures in its module).

``install()`` is idempotent, applies the fixes only on the release they were written for and reports each
one (applied, or not and why); the service logs that report at start-up and exports it as the metric
``mlops_patch_applied{patch=...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from starlette.responses import JSONResponse

FIXED_FOR = "1.4.39"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class CancellingTimeoutMiddleware:
    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def _send(message: Message) -> None:
            nonlocal started
            if not started:
                started = True
                deadline.reschedule(None)  # as BentoML's: the timeout bounds the time to respond
            await send(message)

        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self.app(scope, receive, _send)
        except TimeoutError:
            if started or not deadline.expired():
                raise
            error = {"error": f"Not able to process the request in {self.timeout} seconds"}
            await JSONResponse(error, status_code=504)(scope, receive, send)


def own_listener(shared: socket.socket) -> socket.socket:
    """A socket of this worker's own, bound (not yet listening) to the shared socket's address."""
    if shared.family not in (socket.AF_INET, socket.AF_INET6) or shared.type != socket.SOCK_STREAM:
        return shared  # a Unix socket: leave it shared
    address = shared.getsockname()
    # Every socket on a port must allow SO_REUSEPORT before another may bind it.
    shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own = socket.socket(shared.family, socket.SOCK_STREAM)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own.bind(address)
    own.set_inheritable(False)
    with contextlib.suppress(OSError):  # already stopped by another worker
        shared.shutdown(socket.SHUT_RDWR)  # the shared socket stops listening in every process
    return own


_REPLACED: dict[str, Any] = {}

TIMEOUT_PATCH = "cancelling-timeout-middleware"
LISTENER_PATCH = "worker-own-listener"
ORDER_PATCH = "own-middleware-after-metrics"
METRICS_MIDDLEWARE = "RunnerTrafficMetricsMiddleware"


@dataclass(frozen=True)
class Patch:
    """One fix to a third-party internal, and whether it is in place in this process (and if not, why)."""

    name: str
    target: str
    applied: bool
    reason: str

    def line(self) -> str:
        state = "applied" if self.applied else f"NOT applied, {self.reason}"
        return f"{self.name} ({self.target}): {state}"


def _run_on_own_listeners(run: Callable[..., None]) -> Callable[..., None]:
    def run_with(server: Any, sockets: list[socket.socket] | None = None) -> None:
        run(server, sockets=[own_listener(s) for s in sockets] if sockets else sockets)

    run_with.__wrapped__ = run  # type: ignore[attr-defined]
    return run_with


def _install_timeout() -> Patch:
    from bentoml._internal.server.http import traffic

    target = "bentoml._internal.server.http.traffic.TimeoutMiddleware"
    current: Any = getattr(traffic, "TimeoutMiddleware", None)
    if current is None:
        return Patch(TIMEOUT_PATCH, target, False, "BentoML no longer has that class")
    if current is not CancellingTimeoutMiddleware:
        if list(inspect.signature(current).parameters) != ["app", "timeout"]:
            return Patch(TIMEOUT_PATCH, target, False, f"its signature changed: {inspect.signature(current)}")
        _REPLACED["TimeoutMiddleware"] = current
        traffic.TimeoutMiddleware = CancellingTimeoutMiddleware  # type: ignore[misc,assignment]
    return Patch(TIMEOUT_PATCH, target, True, "")


def _install_listener() -> Patch:
    import uvicorn

    target = "uvicorn.Server.run"
    run = uvicorn.Server.run
    if not hasattr(run, "__wrapped__"):
        if "sockets" not in inspect.signature(run).parameters:
            return Patch(LISTENER_PATCH, target, False, "it takes no sockets argument any more")
        uvicorn.Server.run = _run_on_own_listeners(run)  # type: ignore[method-assign]
    return Patch(LISTENER_PATCH, target, True, "")


def own_middleware_first(built: list[Any], own: list[type]) -> list[Any]:
    """BentoML's middleware list (outermost first) with the service's own (``own``, their classes) moved
    right after its request metrics middleware (to the front when it has none), in their order."""
    mine = [m for m in built if m.cls in own]
    theirs = [m for m in built if m.cls not in own]
    at = next(
        (i + 1 for i, m in enumerate(theirs) if getattr(m.cls, "__name__", "") == METRICS_MIDDLEWARE), 0
    )
    return [*theirs[:at], *mine, *theirs[at:]]


def _own_first(middlewares: property) -> property:
    original = middlewares.fget
    assert original is not None

    def reordered(factory: Any) -> list[Any]:
        return own_middleware_first(original(factory), [cls for cls, _ in factory.service.middlewares])

    reordered.__wrapped__ = original  # type: ignore[attr-defined]
    return property(reordered)


def _install_order() -> Patch:
    from _bentoml_impl.server import app

    target = "_bentoml_impl.server.app.ServiceAppFactory.middlewares"
    middlewares = getattr(app.ServiceAppFactory, "middlewares", None)
    if not isinstance(middlewares, property) or middlewares.fget is None:
        return Patch(ORDER_PATCH, target, False, "it is no longer a property")
    if not hasattr(middlewares.fget, "__wrapped__"):
        app.ServiceAppFactory.middlewares = _own_first(middlewares)
    return Patch(ORDER_PATCH, target, True, "")


def install() -> list[Patch]:
    """Put the fixes in place, only on the release they were written for; what was applied and why not.

    Idempotent. On another release nothing is changed (the fix may be upstream, or need re-checking), and
    the report says so: the service logs it at start-up and exports it as ``mlops_patch_applied``.
    """
    installed = metadata.version("bentoml")
    if installed != FIXED_FOR:
        reason = f"bentoml {installed} is installed and the fix was written for {FIXED_FOR}"
        return [
            Patch(TIMEOUT_PATCH, "bentoml._internal.server.http.traffic.TimeoutMiddleware", False, reason),
            Patch(LISTENER_PATCH, "uvicorn.Server.run", False, reason),
            Patch(ORDER_PATCH, "_bentoml_impl.server.app.ServiceAppFactory.middlewares", False, reason),
        ]
    return [_install_timeout(), _install_listener(), _install_order()]


def bentoml_timeout_middleware() -> Any:
    """BentoML's own class, replaced or not (for the tests that show what the fix removes)."""
    from bentoml._internal.server.http import traffic

    return _REPLACED.get("TimeoutMiddleware", traffic.TimeoutMiddleware)
