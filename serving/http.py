"""ASGI pieces that sit in front of every route: body size limit, the optional API key, the error edge.

Both read their setting when the server builds its app (in each worker), not at import.
"""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from models.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Inference routes: everything that runs the model. Metadata and health stay open for probes.
PROTECTED_SUFFIXES = ("/infer",)
MODEL_PREDICT = ("/predict",)  # a model's own /v2/models/{name}[/versions/{v}]/predict
PROTECTED_PATHS = frozenset({"/predict", "/predict_rows"})
FEEDBACK_SUFFIX = "/feedback"  # /v2/models/{name}/feedback


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


WWW_AUTHENTICATE = ((b"www-authenticate", b'Bearer realm="inference"'),)


def too_large(max_bytes: int) -> str:
    """The body limit's refusal, in the words of every layer that enforces it."""
    return f"body: larger than the limit of {max_bytes} bytes"


def declared_too_large(length: bytes | str | None, max_bytes: int) -> bool:
    """Whether a Content-Length header declares a body over the limit."""
    return length is not None and length.isdigit() and int(length) > max_bytes


def expected_authorization(api_key: str | None = None) -> bytes | None:
    """The Authorization header an inference request must carry (from the settings when no key is given),
    or None when no API key is set."""
    if api_key is None and (secret := Settings().api_key) is not None:
        api_key = secret.get_secret_value()
    return f"Bearer {api_key}".encode() if api_key else None


def authorization_problem(given: bytes, expected: bytes) -> str | None:
    """Why a request's Authorization header is refused (compared in constant time), or None."""
    if hmac.compare_digest(given, expected):
        return None
    which = "missing" if not given else "invalid"
    return f"authorization: {which} API key; expected 'Authorization: Bearer <key>'"


async def send_error(
    send: Send, status: int, error: str, request_id: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """A refusal as every layer gives it: ``{"error", "request_id"}`` with an ``x-request-id`` header."""
    kept = tuple((k, v) for k, v in headers if k.lower() != b"x-request-id")
    await send_json(
        send,
        status,
        {"error": error, "request_id": request_id},
        (*kept, (b"x-request-id", request_id.encode())),
    )


class _BodyTooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: from Content-Length at once, or while a chunked body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes if max_bytes is not None else Settings().max_request_bytes

    async def _reject(self, send: Send) -> None:
        await send_json(send, 413, {"error": too_large(self.max_bytes)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(dict(scope["headers"]).get(b"content-length"), self.max_bytes):
            await self._reject(send)
            return
        received = 0
        too_large = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app answers after the limit tripped (frameworks turn the exception into a
            # 500), the client gets the 413 instead.
            nonlocal started
            if too_large:
                if not started:
                    started = True
                    await self._reject(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLargeError:
            if not started:
                await self._reject(send)


def is_protected(path: str) -> bool:
    """The routes behind the API key: inference, and feedback (labels for earlier answers)."""
    return (
        path in PROTECTED_PATHS
        or path.endswith(PROTECTED_SUFFIXES)
        or _model_predict(path)
        or is_feedback(path)
    )


def is_feedback(path: str) -> bool:
    return path.startswith("/v2/models/") and path.endswith(FEEDBACK_SUFFIX)


def _model_predict(path: str) -> bool:
    return path.startswith("/v2/models/") and path.endswith(MODEL_PREDICT)


def route_of(path: str) -> str:
    """The inference log's name of the route a path reaches (``predict``, ``predict_rows``, ``infer``), the
    same for its answers and its refusals; any other path as it is."""
    if path in PROTECTED_PATHS:
        return path.removeprefix("/")
    if _model_predict(path):
        return "predict"
    return "infer" if path.endswith(PROTECTED_SUFFIXES) else path


class ApiKeyMiddleware:
    """Bearer-token check on inference routes, compared in constant time; the key is never logged."""

    def __init__(self, app: ASGIApp, api_key: str | None = None) -> None:
        self.app = app
        self.expected = expected_authorization(api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        problem = authorization_problem(dict(scope["headers"]).get(b"authorization", b""), self.expected)
        if problem is not None:
            await send_json(send, 401, {"error": problem}, WWW_AUTHENTICATE)
            return
        await self.app(scope, receive, send)


def _error_text(body: bytes) -> str:
    """What a framework's own error body says: its ``detail`` (FastAPI), else its text (Starlette)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:200]
    detail = parsed.get("detail") if isinstance(parsed, dict) else None
    return detail if isinstance(detail, str) else orjson.dumps(parsed).decode()[:200]


def _error_message(body: bytes) -> str | None:
    """The ``error`` of a body that is already ours (``{"error": "..."}``), else None."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, str) and error else None


REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def client_request_id(scope: Scope) -> str | None:
    """The request id a client sent in ``x-request-id`` when it is one we keep (1-64 letters, digits and
    ``._:-``, starting with a letter or digit), else None: the server makes one."""
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            text = bytes(value).decode("latin-1")
            return text if REQUEST_ID.fullmatch(text) else None
    return None


def new_request_id(_path: str, _status: int, _message: str, client_id: str | None = None) -> str:
    """A refusal's request id when nothing records it: the client's own, else a new one."""
    return client_id or uuid.uuid4().hex


class JsonErrorMiddleware:
    """Every 4xx and 5xx leaves as ``{"error": ..., "request_id": ...}`` with an ``x-request-id`` header.

    The edge every refusal passes, whoever made it: the service's own errors, the body limit's and the API
    key's (this middleware is the outermost), and what the service does not route (a path outside its app,
    such as one with a control character, or a method a route does not take), which Starlette or BentoML
    answer as plain text or ``{"detail": ...}`` and which is rewritten, keeping its status and headers.
    ``on_refusal(path, status, message, client_id)`` records the refusal and returns its request id (the
    client's own, ``client_request_id``, when it sent one we keep).
    """

    def __init__(
        self, app: ASGIApp, on_refusal: Callable[[str, int, str, str | None], str] = new_request_id
    ) -> None:
        self.app = app
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message  # held until the whole (small) error body is known
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_error(scope, start, b"".join(chunks), send)

        await self.app(scope, receive, rewriting_send)

    async def _send_error(self, scope: Scope, start: Message, body: bytes, send: Send) -> None:
        error = _error_message(body)
        if error is None:
            what = _error_text(body) or f"HTTP {start['status']}"
            error = f"{scope.get('method', '')} {scope.get('path', '')}: {what}".strip()
        request_id = self.on_refusal(scope.get("path", ""), start["status"], error, client_request_id(scope))
        replaced = (b"content-type", b"content-length")
        kept = tuple((k, v) for k, v in start.get("headers", []) if k.lower() not in replaced)
        await send_error(send, start["status"], error, request_id, kept)
