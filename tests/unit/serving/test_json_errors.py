"""JsonErrorMiddleware on a real Starlette app: the framework's own plain-text and ``detail`` errors leave
as ``{"error": ...}`` with their status and headers, the service's own errors keep their message, every
error gets a request id (body and ``x-request-id``) from the refusal hook, and successes pass as is."""

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.http import JsonErrorMiddleware


async def ok(_: Request) -> Response:
    return PlainTextResponse("fine")


async def own_error(_: Request) -> Response:
    return JSONResponse({"error": "records: expected a list"}, status_code=400)


async def detail_error(_: Request) -> Response:
    return JSONResponse({"detail": "Not allowed here"}, status_code=403)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    routes = [Route("/ok", ok), Route("/own", own_error, methods=["POST"]), Route("/detail", detail_error)]
    app = JsonErrorMiddleware(Starlette(routes=routes), on_refusal=refused.append_and_name)
    with TestClient(app) as test_client:
        yield test_client


class Refused(list[tuple[str, int, str]]):
    def append_and_name(self, path: str, status: int, message: str, client_id: str | None) -> str:
        self.append((path, status, message))
        return client_id or f"req-{len(self)}"


refused = Refused()


def without_id(response: Response) -> dict[str, str]:
    body = dict(response.json())  # type: ignore[attr-defined]
    assert body.pop("request_id") == response.headers["x-request-id"]
    return body


def test_unknown_route_and_wrong_method_become_json_errors(client: TestClient) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert without_id(missing) == {"error": "GET /nowhere: Not Found"}
    wrong = client.get("/own")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert without_id(wrong) == {"error": "GET /own: Method Not Allowed"}
    assert int(wrong.headers["content-length"]) == len(wrong.content)


def test_detail_bodies_are_rewritten_and_own_errors_and_successes_pass(client: TestClient) -> None:
    assert without_id(client.get("/detail")) == {"error": "GET /detail: Not allowed here"}
    refused.clear()
    own = client.post("/own")
    assert own.json() == {"error": "records: expected a list", "request_id": "req-1"}
    assert own.headers["x-request-id"] == "req-1" and refused == [("/own", 400, "records: expected a list")]
    success = client.get("/ok")
    assert success.status_code == 200 and success.text == "fine" and "x-request-id" not in success.headers
    assert len(refused) == 1  # a success is no refusal


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("order-42.a:b", True), ("x" * 64, True), ("x" * 65, False), ("-leading-dash", False), ("a b", False)],
)
def test_a_refusal_keeps_the_request_id_the_client_sent_when_it_is_one_we_keep(
    client: TestClient, sent: str, kept: bool
) -> None:
    own = client.post("/own", headers={"x-request-id": sent})
    assert (own.json()["request_id"] == sent) is kept
    assert own.headers["x-request-id"] == own.json()["request_id"]
