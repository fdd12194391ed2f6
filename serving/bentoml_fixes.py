"""One documented fix to BentoML 1.4.39's request path, installed before the service's app is built.

BentoML's ``TimeoutMiddleware`` (``bentoml/_internal/server/http/traffic.py``) arms
``loop.call_later(timeout, ...)`` for every request and never cancels it, and runs each request as an extra
Task. Every request's timer, future and closure (about 20 objects) then live for the whole timeout: at
hundreds of requests a second that is tens of thousands of live objects, which the garbage collector walks
in gen-2 collections of 150-300 ms, the p99 of the service. ``CancellingTimeoutMiddleware`` keeps the
semantics (504 if the response has not started within ``timeout``; a started response is not cut) with
``asyncio.timeout``, whose timer is cancelled when the request ends, and no extra Task.

BentoML looks the class up when it builds the middleware stack, so replacing the module attribute before
``to_asgi()`` is enough; ``install()`` is idempotent and checks the version it was written against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
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


_REPLACED: dict[str, Any] = {}


def install() -> bool:
    """Replace BentoML's TimeoutMiddleware with the cancelling one; return whether it is in place."""
    from bentoml._internal.server.http import traffic

    if metadata.version("bentoml") != FIXED_FOR:
        return False  # another release: leave it alone (the fix may be upstream, or need re-checking)
    current: Any = traffic.TimeoutMiddleware
    if current is not CancellingTimeoutMiddleware:
        _REPLACED["TimeoutMiddleware"] = current
        traffic.TimeoutMiddleware = CancellingTimeoutMiddleware  # type: ignore[misc,assignment]
    return True


def bentoml_timeout_middleware() -> Any:
    """BentoML's own class, replaced or not (for the tests that show what the fix removes)."""
    from bentoml._internal.server.http import traffic

    return _REPLACED.get("TimeoutMiddleware", traffic.TimeoutMiddleware)
