"""The inference routes answered before BentoML's and FastAPI's per-request machinery.

An ASGI middleware of the service's own, the innermost (inside the error edge, the body limit and the API
key, and BentoML's metrics and timeout): ``POST /v2/models/{name}[/versions/{version}]/infer`` and
``POST /predict`` go straight to the data plane and leave through the same renderers as the FastAPI routes
(``serving/responses.py``), skipping BentoML's request context, the Starlette router and FastAPI's own
middleware, routing and dependency solving: more than half of a request's time in a worker, profiled.
Everything else, and every request before the data plane is bound, goes on to the app unchanged, and the
FastAPI routes stay what the OpenAPI document describes.

It also refuses, with a 415 naming the problem, a body the JSON routes (these and ``/predict_rows``) cannot
read: compressed, or of a media type other than JSON (``application/octet-stream`` too for the binary
tensor extension); a form sent to ``/predict_rows`` got a 500 from BentoML's form parser.
"""

from __future__ import annotations

import re

from models.features import InputError
from serving import dataplane, responses
from serving.dataplane import DataPlane, DataPlaneError, InvalidInput, ModelNotReady
from serving.http import ASGIApp, Message, Receive, Scope, Send, client_request_id
from serving.protocol import BINARY_HEADER

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
PREDICT_PATH = "/predict"
ROWS_PATH = "/predict_rows"
JSON_PATHS = frozenset({PREDICT_PATH, ROWS_PATH})  # besides the infer routes
_BINARY_HEADER = BINARY_HEADER.lower().encode()
_PROBE_HEADER = responses.PROBE_HEADER.lower().encode()


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


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInput("body: the client closed the connection before sending all of it")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


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
    plane: DataPlane, scope: Scope, receive: Receive, match: re.Match[str] | None
) -> responses.Response | None:
    """The fast path's answer, or None when the request is not one of its routes (``match``: the path's
    match of ``INFER_PATH``, made once by the caller)."""
    probe = header(scope, _PROBE_HEADER) == "1"
    if scope["path"] == PREDICT_PATH:
        plane.current()  # not ready: 503 before the body is read
        return await responses.predict(plane, await read_body(receive), probe, client_request_id(scope))
    if match is None:
        return None
    name, version = match.group(1), match.group(2)
    plane.model(name, version)  # a wrong name or version is refused before the body is read
    binary = header(scope, _BINARY_HEADER)
    body = await read_body(receive)
    return await responses.infer(plane, name, version, body, binary, probe, client_request_id(scope))


class FastPathMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        match = INFER_PATH.fullmatch(path)
        infer = match is not None
        if infer or path in JSON_PATHS:
            problem = content_problem(scope, infer and header(scope, _BINARY_HEADER) is not None)
            if problem is not None:  # before BentoML's form parser, which answers a form with a 500
                await responses.json_response({"error": problem}, 415)(scope, receive, send)
                return
        plane = dataplane.bound()
        if plane is None:
            await self.app(scope, receive, send)
            return
        if path == ROWS_PATH:  # checked here, batched and answered by BentoML
            try:
                body = await read_body(receive)
                check_rows(plane, body)
            except DataPlaneError as exc:
                await responses.refused(exc)(scope, receive, send)
                return
            await self.app(scope, replay(body), send)
            return
        try:
            response = await answer(plane, scope, receive, match)
        except DataPlaneError as exc:
            response = responses.refused(exc)
        if response is None:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
