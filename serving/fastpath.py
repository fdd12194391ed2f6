"""The inference routes answered before BentoML's and FastAPI's per-request machinery.

An ASGI middleware of the service's own, the first of them, placed right after BentoML's request metrics
(``serving/bentoml_fixes.py`` puts the service's middlewares there, before BentoML's tracing, timeout and
request context): ``POST /v2/models/{name}[/versions/{version}]/infer`` and ``POST /predict`` go straight
to the data plane and leave through the same renderers as the FastAPI routes (``serving/responses.py``),
skipping the Starlette router and FastAPI's own middleware, routing and dependency solving. Everything else,
and every request before the data plane is bound, goes on to the app unchanged (through the error edge,
the body limit and the API key of ``serving/http.py``), and the FastAPI routes stay what the OpenAPI
document describes.

For its own routes it is the edge as well, with the same words and statuses as those middlewares, in the
same order: a body over the limit (413, from Content-Length or while it streams in), a missing or wrong API
key (401), then a body the JSON routes cannot read (415: compressed, or of a media type other than JSON,
``application/octet-stream`` too for the binary tensor extension; a form sent to ``/predict_rows`` got a 500
from BentoML's form parser). Every refusal carries a request id and is recorded through ``on_refusal``, as
the error edge does; an unexpected error is a 500 with a request id, its traceback logged. A body that has
not arrived whole within ``BODY_TIMEOUT_S`` is a 408.

Measured (wrk, single rows, 6 s cells, median of three rounds, before and after on the same machine): as the
innermost middleware the fast path answered 2,161 / 4,307 / 4,590 OIP and 2,495 / 5,414 / 5,734 ``/predict``
req/s at 1 / 8 / 32 connections; here, 2,406 / 4,752 / 5,047 and 2,859 / 6,118 / 6,349 (1.10x-1.15x).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable

from models.features import InputError
from models.settings import Settings
from models.traffic import ROUTING_HEADER, routing_key
from serving import dataplane, http, responses
from serving.dataplane import DataPlane, DataPlaneError, InvalidInput, ModelNotReady
from serving.http import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    client_request_id,
    new_request_id,
)
from serving.protocol import BINARY_HEADER

logger = logging.getLogger(__name__)

# a model's own routes: OIP ``infer``, and ``predict`` (named-feature records, as the default's ``/predict``)
MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/(infer|predict)")
PREDICT_PATH = "/predict"
ROWS_PATH = "/predict_rows"
JSON_PATHS = frozenset({PREDICT_PATH, ROWS_PATH})  # besides the infer routes
_BINARY_HEADER = BINARY_HEADER.lower().encode()
_PROBE_HEADER = responses.PROBE_HEADER.lower().encode()
_ROUTING_HEADER = ROUTING_HEADER.encode()
BODY_TIMEOUT_S = 30.0  # as BentoML's request timeout, which the fast path's requests no longer pass


class Refusal(Exception):  # noqa: N818 - not an error of the server's: an answer
    """A refusal at the edge: its status, its message and any headers it carries."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers


_HEADERS = "mlops.headers"  # the request's headers as a mapping, made once per request, kept in its scope


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (names are lower case in ASGI), the first if repeated."""
    headers = scope.get(_HEADERS)
    if headers is None:
        headers = scope[_HEADERS] = {key: value for key, value in reversed(scope["headers"])}
    value = headers.get(name)
    return None if value is None else bytes(value).decode("latin-1")


def content_problem(scope: Scope, binary: bool) -> str | None:
    """Why a JSON route cannot read this body, or None: a compressed body, or a media type that is not JSON
    (with the binary tensor extension, ``application/octet-stream`` too). No content type is read as JSON."""
    encoding = header(scope, b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        return f"content-encoding: {encoding!r:.40} is not accepted; send the body uncompressed"
    given = header(scope, b"content-type")
    if given is None:
        return None
    media = given.split(";", 1)[0].strip().lower()
    if media == "application/json" or (binary and media == "application/octet-stream"):
        return None
    expected = "application/json" + (" or application/octet-stream" if binary else "")
    return f"content-type: expected {expected}, got {media!r:.60}"


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """The whole body; a 413 as soon as it grows past ``max_bytes``, a 408 when the rest of it has not come
    within ``BODY_TIMEOUT_S`` (a body sent in one piece, the usual case, is read without a timer)."""
    message = await receive()
    chunks = [_chunk(message, 0, max_bytes)]
    if not message.get("more_body", False):
        return chunks[0]
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            size = len(chunks[0])
            while message.get("more_body", False):
                message = await receive()
                chunks.append(_chunk(message, size, max_bytes))
                size += len(chunks[-1])
    except TimeoutError:
        raise Refusal(408, f"body: not received whole within {BODY_TIMEOUT_S:g} s") from None
    return b"".join(chunks)


def _chunk(message: Message, received: int, max_bytes: int) -> bytes:
    if message["type"] == "http.disconnect":
        raise InvalidInput("body: the client closed the connection before sending all of it")
    chunk: bytes = message.get("body", b"")
    if received + len(chunk) > max_bytes:
        raise Refusal(413, http.too_large(max_bytes))
    return chunk


def replay(body: bytes) -> Receive:
    """A ``receive`` that gives the app a body already read, whole, then waits as a client would."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def check_rows(plane: DataPlane, body: bytes) -> None:
    """A ``/predict_rows`` body checked as the model will take it, before BentoML's batcher sees it (its
    own validation answered "1 validation error for Input", and logged a traceback at ERROR)."""
    parsed = dataplane.parse_json(body)
    rows = parsed.get("rows") if isinstance(parsed, dict) else None
    if not isinstance(rows, list) or not rows:
        raise InvalidInput("body: expected a JSON object with 'rows', a non-empty list of records")
    try:
        plane.check_rows(rows)
    except InputError as exc:
        raise InvalidInput(str(exc).replace("records[", "rows[", 1)) from None
    except ValueError as exc:  # no model loaded yet
        raise ModelNotReady(f"model: {exc}") from None


async def answer(
    plane: DataPlane, scope: Scope, receive: Receive, match: re.Match[str] | None, max_bytes: int
) -> responses.Response:
    """The fast path's answer to ``/predict`` or a model's route (``match``: the path's match of
    ``MODEL_PATH``, made once by the caller, None for ``/predict``)."""
    probe = header(scope, _PROBE_HEADER) == "1"
    request_id = client_request_id(scope) or uuid.uuid4().hex  # made now: it may be the routing key
    name, version, route = match.groups() if match is not None else (None, None, "predict")
    key = routing_key(header(scope, _ROUTING_HEADER), request_id, version, probe)
    if name is None:
        model = plane.current(key)  # not ready: 503 before the body is read
    else:  # a wrong name or version: refused before the body
        model = await plane.served_model(name, version, key)
    body = await read_body(receive, max_bytes)
    if route == "predict":
        return await responses.predict(plane, body, probe, request_id, model, key)
    binary = header(scope, _BINARY_HEADER)
    return await responses.infer(plane, model.ref.name, version, body, binary, probe, request_id, key)


class FastPathMiddleware:
    """See the module's docstring. ``api_key`` and ``max_bytes`` default to the settings, read when the
    server builds its app (in each worker); ``on_refusal(path, status, message, client_id)`` records a
    refusal and returns its request id, as the error edge's."""

    def __init__(
        self,
        app: ASGIApp,
        on_refusal: Callable[[str, int, str, str | None], str] = new_request_id,
        api_key: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.on_refusal = on_refusal
        self.expected = http.expected_authorization(api_key)
        self.max_bytes = max_bytes if max_bytes is not None else Settings().max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        match = MODEL_PATH.fullmatch(path)
        if match is None and path not in JSON_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            self.admit(scope, match is not None and match.group(3) == "infer")
        except Refusal as refusal:
            await self.refuse(scope, send, refusal.status, str(refusal), refusal.headers)
            return
        plane = dataplane.bound()
        if plane is None:  # starting: the app answers (the routes' own 503)
            await self.app(scope, receive, send)
            return
        try:
            if path == ROWS_PATH:  # checked here, batched and answered by BentoML
                body = await read_body(receive, self.max_bytes)
                check_rows(plane, body)
            else:
                response = await answer(plane, scope, receive, match, self.max_bytes)
        except Refusal as refusal:
            await self.refuse(scope, send, refusal.status, str(refusal), refusal.headers)
            return
        except DataPlaneError as exc:
            await self.refuse(scope, send, responses.STATUS.get(type(exc), 400), str(exc))
            return
        except Exception:
            logger.exception("%s %s failed", scope["method"], path)
            await self.refuse(scope, send, 500, f"POST {path}: internal error (the service's log has it)")
            return
        if path == ROWS_PATH:
            await self.app(scope, replay(body), send)
            return
        await response(scope, receive, send)

    def admit(self, scope: Scope, infer: bool) -> None:
        """The edge's checks before the body is read, in the order of ``serving/http.py``'s middlewares."""
        if http.declared_too_large(header(scope, b"content-length"), self.max_bytes):
            raise Refusal(413, http.too_large(self.max_bytes))
        if self.expected is not None:
            given = (header(scope, b"authorization") or "").encode("latin-1")
            if (problem := http.authorization_problem(given, self.expected)) is not None:
                raise Refusal(401, problem, http.WWW_AUTHENTICATE)
        problem = content_problem(scope, infer and header(scope, _BINARY_HEADER) is not None)
        if problem is not None:  # before BentoML's form parser, which answers a form with a 500
            raise Refusal(415, problem)

    async def refuse(
        self, scope: Scope, send: Send, status: int, error: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        request_id = self.on_refusal(scope["path"], status, error, client_request_id(scope))
        await http.send_error(send, status, error, request_id, headers)
