"""The BentoML service over HTTP, in process, through ``to_asgi()``: routes, errors, provenance, log."""

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient

from models import datasets
from models.inference_records import read_records
from serving.fastpath import FastPathMiddleware
from serving.protocol import BINARY_HEADER, binary_request, read_binary_response
from serving.service import OVERLAP_ROWS, ModelService
from tests.conftest import Registered, settings_env

SPEC = datasets.BREAST_CANCER


@pytest.fixture(scope="module")
def client(champion: Registered) -> Iterator[TestClient]:
    """One app per module: BentoML registers its Prometheus metrics once per process."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings_env(champion.settings).items():
            patch.setenv(key, value)
        patch.setenv("MLOPS_MAX_REQUEST_BYTES", "200000")
        app = ModelService.to_asgi()  # type: ignore[attr-defined]  # bentoml.service wraps the class
        with TestClient(app) as test_client:
            yield test_client


@pytest.fixture(scope="module")
def record(split: datasets.Split) -> dict[str, Any]:
    return datasets.records(split.holdout.head(1), SPEC)[0]


def infer_body(rows: list[dict[str, Any]], request_id: str | None = "req-1") -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {"name": name, "shape": [len(rows), 1], "datatype": "FP64", "data": [r[name] for r in rows]}
            for name in SPEC.feature_names
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def test_predict_one_record_names_model_version_and_run(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    response = client.post("/predict", json={"records": record})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == champion.settings.model_name
    assert body["model_version"] == champion.version
    assert body["run_id"] == champion.run_id
    assert body["logged"] is True
    assert len(body["request_id"]) == 32
    assert response.headers["x-request-id"] == body["request_id"]
    assert response.headers["x-model-version"] == champion.version
    assert body["predictions"][0]["label"] in (0, 1)


def test_predict_a_batch(client: TestClient, split: datasets.Split) -> None:
    records = datasets.records(split.holdout.head(50), SPEC)
    response = client.post("/predict", json={"records": records})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 50


def test_server_and_health_routes(client: TestClient) -> None:
    assert client.get("/v2").json()["name"] == "mlops-path"
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert "mlops_prediction_seconds" in client.get("/metrics").text


def test_model_metadata_and_versions(client: TestClient, champion: Registered) -> None:
    name, version = champion.settings.model_name, champion.version
    body = client.get(f"/v2/models/{name}").json()
    assert body["versions"] == [version]
    assert body["platform"] == "onnx"
    assert body["inputs"][0] == {"name": "mean_radius", "datatype": "FP64", "shape": [-1, 1]}
    assert body["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
    ]
    assert body["parameters"]["run_id"] == champion.run_id
    assert client.get(f"/v2/models/{name}/versions/{version}").json() == body
    assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    assert client.get(f"/v2/models/{name}/versions/{version}/ready").json()["ready"] is True


def test_infer_follows_the_protocol(client: TestClient, champion: Registered, split: datasets.Split) -> None:
    rows = datasets.records(split.holdout.head(3), SPEC)
    name = champion.settings.model_name
    for path in (f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/{champion.version}/infer"):
        response = client.post(path, json=infer_body(rows))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "req-1"
        assert (body["model_name"], body["model_version"]) == (name, champion.version)
        assert body["parameters"]["run_id"] == champion.run_id
        label, probabilities = body["outputs"]
        assert label["name"] == "label" and label["datatype"] == "INT64" and label["shape"] == [3, 1]
        assert label["data"] == split.y_holdout.head(3).tolist()
        assert probabilities["shape"] == [3, 2] and len(probabilities["data"]) == 6
        assert math.isclose(sum(probabilities["data"][:2]), 1.0)
    only = client.post(
        f"/v2/models/{name}/infer", json={**infer_body(rows, None), "outputs": [{"name": "probabilities"}]}
    ).json()
    assert [o["name"] for o in only["outputs"]] == ["probabilities"]
    assert "id" not in only


def test_predict_and_infer_agree(client: TestClient, champion: Registered, split: datasets.Split) -> None:
    rows = datasets.records(split.holdout.head(5), SPEC)
    predicted = client.post("/predict", json={"records": rows}).json()["predictions"]
    inferred = client.post(f"/v2/models/{champion.settings.model_name}/infer", json=infer_body(rows)).json()
    assert [p["label"] for p in predicted] == inferred["outputs"][0]["data"]


def test_predict_rows_batchable(client: TestClient, champion: Registered, split: datasets.Split) -> None:
    rows = datasets.records(split.holdout.head(4), SPEC)
    response = client.post("/predict_rows", json={"rows": rows})
    assert response.status_code == 200, response.text
    answers = response.json()
    assert [a["row"] for a in answers] == [0, 1, 2, 3]
    assert {a["model_version"] for a in answers} == {champion.version}
    assert [a["label"] for a in answers] == split.y_holdout.head(4).tolist()
    bad = client.post("/predict_rows", json={"rows": [{**rows[0], "mean_area": "big"}]})
    assert bad.status_code == 400


BAD_PREDICT = [
    (b"{not json", "body: invalid JSON"),
    (b"[1, 2]", "body: expected a JSON object with 'records'"),
    (b'{"records": 7}', "records: expected an object of named features or a list"),
    (b'{"records": []}', "records: expected at least one record"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_PREDICT)
def test_malformed_predict_bodies_get_400(client: TestClient, raw: bytes, message: str) -> None:
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: {k: v for k, v in r.items() if k != "mean_area"},
            "records[0]: missing features ['mean_area']",
        ),
        (lambda r: {**r, "mean_area": "large"}, "records[0].mean_area: expected a number, got str"),
        (lambda r: {**r, "shoe_size": 44}, "records[0]: unknown features ['shoe_size']"),
        (lambda r: {**r, "mean_area": None}, "records[0].mean_area: expected a number, got NoneType"),
    ],
)
def test_bad_records_get_a_400_naming_the_field(client: TestClient, record, mutate, message) -> None:
    response = client.post("/predict", json={"records": [mutate(record)]})
    assert response.status_code == 400
    assert response.json()["error"] == message or message in response.json()["error"]


def test_nan_and_infinity_are_refused(
    client: TestClient, record: dict[str, Any], champion: Registered
) -> None:
    raw = orjson.dumps({"records": [{**record, "mean_area": 1.0}]}).replace(
        b'"mean_area":1.0', b'"mean_area":NaN'
    )
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400  # orjson refuses NaN literals: invalid JSON, named as such
    body = infer_body([record])
    body["inputs"][3]["data"] = [12345.5]
    cases = (
        (b"1e999", "number is infinity"),
        (b"null", "inputs[3].data[0]: expected a number, got NoneType"),
    )
    for literal, message in cases:
        response = client.post(
            f"/v2/models/{champion.settings.model_name}/infer",
            content=orjson.dumps(body).replace(b"12345.5", literal),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert message in response.json()["error"]  # overflow: invalid JSON; null: named in the tensor


def infer_error(client: TestClient, name: str, body: Any) -> tuple[int, str]:
    response = client.post(f"/v2/models/{name}/infer", json=body)
    return response.status_code, response.json()["error"]


def test_bad_infer_requests_get_400_naming_the_field(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    name = champion.settings.model_name
    good = infer_body([record])

    def changed(index: int, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(orjson.dumps(good))
        body["inputs"][index].update(fields)
        return body

    cases = [
        ({"inputs": []}, "inputs: expected a non-empty list"),
        ({**good, "id": 5}, "id: expected a string"),
        (changed(0, name="radius"), "inputs[0].name: unknown input 'radius'"),
        (changed(1, datatype="BYTES"), "inputs[1].datatype: expected FP64 for 'mean_texture', got 'BYTES'"),
        (changed(2, shape=[1, 3]), "inputs[2].shape: expected [n] or [n, 1]"),
        (changed(2, data=[1.0, 2.0]), "inputs[2].data: expected 1 values for shape [1, 1], got 2"),
        (changed(4, data=["x"]), "inputs[4].data[0]: expected a number, got str 'x'"),
        (changed(5, data=[True]), "inputs[5].data[0]: expected a number, got bool True"),
        ({"inputs": good["inputs"][:-1]}, "inputs: missing tensors for ['worst_fractal_dimension']"),
        ({**good, "outputs": [{"name": "logits"}]}, "outputs: unknown ['logits']"),
    ]
    for body, message in cases:
        status, error = infer_error(client, name, body)
        assert status == 400, (body, error)
        assert error.startswith(message) or message in error, (message, error)


def test_unknown_model_version_or_route_is_404(client: TestClient, champion: Registered) -> None:
    name = champion.settings.model_name
    for path in (
        "/v2/models/other",
        f"/v2/models/{name}/versions/999",
        "/v2/models/other/ready",
        "/v2/repository",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]
    response = client.post("/v2/models/other/infer", json={})
    assert response.status_code == 404
    assert "'other' is not served here" in response.json()["error"]


def test_oversized_bodies_get_413(client: TestClient) -> None:
    response = client.post("/predict", content=b"x" * 300_000, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "larger than the limit of 200000 bytes" in response.json()["error"]

    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b"x" * 10_000

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_every_prediction_is_in_the_inference_log(client: TestClient, champion: Registered, split) -> None:
    directory = champion.settings.inference_log_dir
    before = sum(1 for _ in read_records(directory))
    rows = datasets.records(split.holdout.head(7), SPEC)
    ids = [client.post("/predict", json={"records": rows}).json()["request_id"] for _ in range(3)]
    records = {r["request_id"]: r for r in read_records(directory)}
    assert sum(1 for _ in read_records(directory)) == before + 3
    logged = records[ids[0]]
    assert logged["version"] == champion.version and logged["run_id"] == champion.run_id
    assert logged["rows"] == 7 and logged["route"] == "predict"
    assert logged["inputs"]["mean_radius"] == [r["mean_radius"] for r in rows]
    assert logged["outputs"]["label"] == split.y_holdout.head(7).tolist()
    assert len(logged["outputs"]["probabilities"]) == 7 and logged["latency_ms"] > 0


def test_a_large_request_is_logged_whole_while_inference_runs_beside(
    client: TestClient, champion: Registered, split: datasets.Split
) -> None:
    """From OVERLAP_ROWS rows the inputs are encoded for the log while onnxruntime runs in its thread."""
    directory = champion.settings.inference_log_dir
    rows = datasets.records(split.holdout.sample(OVERLAP_ROWS * 3, replace=True, random_state=1), SPEC)
    by_records = client.post("/predict", json={"records": rows}).json()
    body, headers = binary_request({n: np.array([r[n] for r in rows]) for n in SPEC.feature_names})
    by_tensors = client.post(
        f"/v2/models/{champion.settings.model_name}/infer", content=body, headers=headers
    )
    records = {r["request_id"]: r for r in read_records(directory)}
    for request_id in (by_records["request_id"], by_tensors.json()["parameters"]["request_id"]):
        logged = records[request_id]
        assert logged["rows"] == len(rows)
        assert logged["inputs"] == {n: [r[n] for r in rows] for n in SPEC.feature_names}
    assert [p["label"] for p in by_records["predictions"]] == by_tensors.json()["outputs"][0]["data"]


def test_cors_is_off_by_default(client: TestClient, record: dict[str, Any]) -> None:
    origin = {"origin": "https://elsewhere.example"}
    response = client.post("/predict", json={"records": record}, headers=origin)
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    preflight = client.options("/predict", headers={**origin, "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_the_deploy_checks_requests_are_logged_and_marked(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    from models.inference_records import PROBE_HEADER

    probe = client.post("/predict", json={"records": record}, headers={PROBE_HEADER: "1"}).json()
    body = infer_body([record], request_id=None)
    probe_infer = client.post(
        f"/v2/models/{champion.settings.model_name}/infer", json=body, headers={PROBE_HEADER: "1"}
    )
    consumer = client.post("/predict", json={"records": record}).json()
    records = {r["request_id"]: r for r in read_records(champion.settings.inference_log_dir)}
    assert records[probe["request_id"]]["probe"] is True
    assert records[probe_infer.json()["parameters"]["request_id"]]["probe"] is True
    assert "probe" not in records[consumer["request_id"]]


def binary_body(rows: list[dict[str, Any]], **fields: Any) -> tuple[bytes, dict[str, str]]:
    columns = {name: np.array([r[name] for r in rows]) for name in SPEC.feature_names}
    return binary_request(columns, **fields)


def test_binary_tensors_in_and_out_give_the_json_answers(
    client: TestClient, champion: Registered, split: datasets.Split
) -> None:
    rows = datasets.records(split.holdout.head(4), SPEC)
    path = f"/v2/models/{champion.settings.model_name}/infer"
    as_json = client.post(path, json=infer_body(rows)).json()
    body, headers = binary_body(rows, id="req-1")
    as_binary = client.post(path, content=body, headers=headers)
    assert as_binary.status_code == 200, as_binary.text
    assert as_binary.json()["outputs"] == as_json["outputs"]
    assert as_binary.json()["id"] == "req-1"
    body, headers = binary_body(rows, parameters={"binary_data_output": True})
    raw = client.post(path, content=body, headers=headers)
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/octet-stream"
    decoded = read_binary_response(raw.content, raw.headers[BINARY_HEADER])
    assert [o["data"] for o in decoded["outputs"]] == [o["data"] for o in as_json["outputs"]]
    assert decoded["parameters"]["run_id"] == champion.run_id and decoded["model_version"] == champion.version


def test_bad_binary_requests_get_400_naming_the_problem(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    path = f"/v2/models/{champion.settings.model_name}/infer"
    body, headers = binary_body([record])
    head_length = int(headers[BINARY_HEADER])
    nan = np.array([math.nan]).tobytes()
    cases = [
        (body + b"\0" * 8, headers, "body: 8 bytes of binary data no input claims"),
        (body[:-8], headers, "inputs[29].parameters.binary_data_size: 8 bytes, but only 0 are left"),
        (body[:head_length] + nan + body[head_length + 8 :], headers, "inputs[0].data[0]: expected a finite"),
        (body, {**headers, BINARY_HEADER: str(len(body) + 1)}, "Inference-Header-Content-Length: expected"),
        (body, {**headers, BINARY_HEADER: "12"}, "body: invalid JSON"),
        (
            body.replace(b'"binary_data_size":8', b'"binary_data_size":4', 1),
            headers,
            "inputs[0].parameters.binary_data_size: expected 8 bytes for 1 FP64 values, got 4",
        ),
    ]
    for content, sent_headers, message in cases:
        response = client.post(path, content=content, headers=sent_headers)
        assert response.status_code == 400, (message, response.text)
        assert response.json()["error"].startswith(message), (message, response.json())


def test_every_refusal_carries_a_request_id_and_is_recorded_once(
    client: TestClient, champion: Registered, split: datasets.Split
) -> None:
    """Whoever refuses (a route, the body limit, BentoML's own validation), the answer names a request id
    and the inference log holds one record of it; a 404 (not the model's doing) gets an id, no record."""
    directory = champion.settings.inference_log_dir
    name = champion.settings.model_name
    json_body = {"content-type": "application/json"}
    refused = {
        "route": client.post("/predict", json={"records": [{"mean_radius": 1.0}]}),
        "body limit": client.post("/predict", content=b"x" * 300_000, headers=json_body),
        "bentoml": client.post("/predict_rows", json={"rows": "not rows"}),
        "protocol": client.post(f"/v2/models/{name}/infer", content=b"{", headers=json_body),
    }
    not_found = client.post("/v2/models/other/infer", json={})
    records = {r["request_id"]: r for r in read_records(directory) if "error" in r}
    for who, response in refused.items():
        assert 400 <= response.status_code < 500, (who, response.text)
        request_id = response.json()["request_id"]
        assert response.headers["x-request-id"] == request_id, who
        record = records[request_id]
        assert record["status"] == response.status_code, who
        assert record["error"] == response.json()["error"][:500], who  # the log keeps 500 characters
        assert record["version"] == champion.version and record["rows"] == 0, who
    assert refused["body limit"].status_code == 413 and refused["bentoml"].status_code == 400
    assert not_found.status_code == 404 and not_found.json()["request_id"] not in records
    assert sum(1 for r in read_records(directory) if r["request_id"] in records) == len(records)


def test_the_fast_path_answers_the_inference_routes_without_reaching_the_app(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    """The app behind the fast path answers 418 to whatever reaches it: only other routes may."""
    reached: list[str] = []

    async def teapot(scope: Any, receive: Any, send: Any) -> None:
        reached.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    name = champion.settings.model_name
    fast = TestClient(FastPathMiddleware(teapot))  # no lifespan: the service's own client bound the plane
    predicted = fast.post("/predict", json={"records": record})
    inferred = fast.post(f"/v2/models/{name}/infer", json=infer_body([record]))
    pinned = fast.post(f"/v2/models/{name}/versions/{champion.version}/infer", json=infer_body([record]))
    wrong = fast.post("/v2/models/nope/infer", json=infer_body([record]))
    broken = fast.post("/predict", content=b"{not json")
    other = fast.get("/v2")
    assert [r.status_code for r in (predicted, inferred, pinned, wrong, broken)] == [200, 200, 200, 404, 400]
    assert predicted.json()["model_version"] == inferred.json()["model_version"] == champion.version
    assert inferred.headers["x-request-id"] == inferred.json()["parameters"]["request_id"]
    assert "not served here" in wrong.json()["error"] and "invalid JSON" in broken.json()["error"]
    assert other.status_code == 418 and reached == ["GET /v2"]
    # and through the whole service, the same answer as the fast path's
    assert (
        client.post("/predict", json={"records": record}).json()["predictions"]
        == predicted.json()["predictions"]
    )


@pytest.mark.parametrize(
    ("path", "headers", "problem"),
    [
        (
            "/predict",
            {"content-type": "text/plain"},
            "content-type: expected application/json, got 'text/plain'",
        ),
        (
            "/predict_rows",
            {"content-type": "multipart/form-data; boundary=x"},
            "content-type: expected application/json, got 'multipart/form-data'",
        ),
        (
            "/predict_rows",
            {"content-type": "application/x-www-form-urlencoded"},
            "content-type: expected application/json, got 'application/x-www-form-urlencoded'",
        ),
        (
            "/v2/models/{name}/infer",
            {"content-type": "application/octet-stream"},
            "content-type: expected application/json, got 'application/octet-stream'",
        ),
        (
            "/predict",
            {"content-type": "application/json", "content-encoding": "gzip"},
            "content-encoding: 'gzip' is not accepted; send the body uncompressed",
        ),
    ],
)
def test_a_body_a_json_route_cannot_read_is_refused_with_415_naming_why(
    client: TestClient, champion: Registered, path: str, headers: dict[str, str], problem: str
) -> None:
    path = path.format(name=champion.settings.model_name)
    response = client.post(path, content=b'{"records": {}}', headers=headers)
    assert response.status_code == 415, response.text
    body = response.json()
    assert body["error"] == problem
    assert body["request_id"] == response.headers["x-request-id"]


def test_json_with_a_charset_and_binary_tensors_as_octet_stream_are_read(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    json_with_charset = {"content-type": "application/json; charset=utf-8"}
    assert client.post(
        "/predict", content=orjson.dumps({"records": record}), headers=json_with_charset
    ).is_success
    body, headers = binary_request({n: np.array([record[n]]) for n in SPEC.feature_names})
    assert headers["content-type"] == "application/octet-stream"
    assert client.post(
        f"/v2/models/{champion.settings.model_name}/infer", content=body, headers=headers
    ).is_success


def test_the_request_id_a_client_sends_names_its_answer_its_refusal_and_their_log_records(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    name = champion.settings.model_name
    answered = client.post("/predict", json={"records": record}, headers={"x-request-id": "client-7.a"})
    inferred = client.post(
        f"/v2/models/{name}/infer", json=infer_body([record]), headers={"x-request-id": "c-8"}
    )
    refused = client.post("/predict", json={"records": {}}, headers={"x-request-id": "client-9"})
    assert answered.json()["request_id"] == answered.headers["x-request-id"] == "client-7.a"
    assert inferred.json()["parameters"]["request_id"] == inferred.headers["x-request-id"] == "c-8"
    assert refused.status_code == 400
    assert refused.json()["request_id"] == refused.headers["x-request-id"] == "client-9"
    logged = {r["request_id"]: r for r in read_records(champion.settings.inference_log_dir)}
    assert logged["client-7.a"]["route"] == "predict" and logged["c-8"]["route"] == "infer"
    assert logged["client-9"]["status"] == 400
    unusable = client.post("/predict", json={"records": record}, headers={"x-request-id": "no spaces"})
    assert len(unusable.json()["request_id"]) == 32  # not one we keep: the server made one


def test_binary_outputs_asked_for_one_by_one_as_triton_clients_do(
    client: TestClient, champion: Registered, split: datasets.Split
) -> None:
    rows = datasets.records(split.holdout.head(3), SPEC)
    path = f"/v2/models/{champion.settings.model_name}/infer"
    as_json = {o["name"]: o for o in client.post(path, json=infer_body(rows)).json()["outputs"]}
    label, probabilities = list(as_json)
    mixed = {
        **infer_body(rows),
        "outputs": [{"name": label, "parameters": {"binary_data": True}}, {"name": probabilities}],
    }
    raw = client.post(path, json=mixed)
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/octet-stream"
    decoded = {o["name"]: o for o in read_binary_response(raw.content, raw.headers[BINARY_HEADER])["outputs"]}
    assert decoded[label]["parameters"]["binary_data_size"] == 8 * len(rows)  # INT64, in the bytes after
    assert "parameters" not in decoded[probabilities]  # asked for without binary_data: JSON, inline
    assert [decoded[n]["data"] for n in (label, probabilities)] == [
        as_json[n]["data"] for n in (label, probabilities)
    ]
    # the request's default for all, and an output's own false over it
    overridden = {
        **infer_body(rows),
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": label, "parameters": {"binary_data": False}}, {"name": probabilities}],
    }
    raw = client.post(path, json=overridden)
    decoded = {o["name"]: o for o in read_binary_response(raw.content, raw.headers[BINARY_HEADER])["outputs"]}
    assert "parameters" not in decoded[label] and "binary_data_size" in decoded[probabilities]["parameters"]
    bad = client.post(
        path, json={**infer_body(rows), "outputs": [{"name": label, "parameters": {"binary_data": 1}}]}
    )
    assert bad.status_code == 400 and "outputs[0].parameters.binary_data: expected true or false" in bad.text


def test_a_refused_predict_rows_request_names_the_problem_is_logged_once_and_leaves_no_traceback(
    client: TestClient, champion: Registered, record: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bad = client.post(
        "/predict_rows", json={"rows": [{**record, "mean_area": "big"}]}, headers={"x-request-id": "r-1"}
    )
    empty = client.post("/predict_rows", json={"rows": []}, headers={"x-request-id": "r-2"})
    assert bad.status_code == empty.status_code == 400
    assert bad.json()["error"] == "rows[0].mean_area: expected a number, got str 'big'"
    assert "'rows', a non-empty list" in empty.json()["error"]
    logged = [
        r for r in read_records(champion.settings.inference_log_dir) if r["request_id"] in ("r-1", "r-2")
    ]
    assert [(r["route"], r["status"]) for r in logged] == [("predict_rows", 400)] * 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    refused_predict = client.post("/predict", json={"records": {}}, headers={"x-request-id": "r-3"})
    assert refused_predict.status_code == 400
    routes = {r["request_id"]: r["route"] for r in read_records(champion.settings.inference_log_dir)}
    assert routes["r-3"] == "predict"  # the answers' own route name, not the path


def test_the_openapi_document_publishes_the_bodies_the_refusals_and_the_project(client: TestClient) -> None:
    from importlib import metadata

    document = client.get("/openapi.json").json()
    assert document["info"] == {"title": "mlops-path inference", "version": metadata.version("mlops-path")}
    for path in ("/predict", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        post = document["paths"][path]["post"]
        assert post["requestBody"]["required"] is True
        assert {"400", "401", "404", "413", "415", "503"} <= set(post["responses"])
        error = post["responses"]["415"]["content"]["application/json"]["schema"]
        assert error["required"] == ["error", "request_id"]
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert set(infer) == {"application/json", "application/octet-stream"}
    predict = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert predict["required"] == ["records"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower() and "/openapi.json" in docs.text


def test_the_fast_path_runs_after_bentomls_request_metrics_and_before_its_tracing_and_timeout(
    client: TestClient,
) -> None:
    names = [m.cls.__name__ for m in client.app.user_middleware]  # type: ignore[attr-defined]
    assert names.index("RunnerTrafficMetricsMiddleware") + 1 == names.index("FastPathMiddleware")
    assert names.index("FastPathMiddleware") < names.index("JsonErrorMiddleware")
    assert names.index("ApiKeyMiddleware") < names.index("OpenTelemetryMiddleware")
    assert names.index("ApiKeyMiddleware") < names.index("CancellingTimeoutMiddleware")


def teapot_app(reached: list[str]) -> Any:
    async def teapot(scope: Any, receive: Any, send: Any) -> None:
        reached.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return teapot


def test_the_fast_path_is_the_edge_of_its_routes_key_limit_and_media_type_each_with_a_request_id(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    reached: list[str] = []
    recorded: list[tuple[str, int]] = []

    def on_refusal(path: str, status: int, message: str, client_id: str | None) -> str:
        recorded.append((path, status))
        return client_id or f"refused-{len(recorded)}"

    app = FastPathMiddleware(teapot_app(reached), on_refusal, api_key="sesame", max_bytes=4000)
    fast = TestClient(app)
    key = {"authorization": "Bearer sesame"}
    infer = f"/v2/models/{champion.settings.model_name}/infer"
    missing = fast.post("/predict", json={"records": record})
    wrong = fast.post(infer, json=infer_body([record]), headers={"authorization": "Bearer nope"})
    big = orjson.dumps({"records": [record] * 20})
    declared = fast.post("/predict", content=big, headers={**key, "content-type": "application/json"})
    streamed = fast.post(
        "/predict",
        content=iter([big[:3000], big[3000:]]),
        headers={**key, "content-type": "application/json"},
    )
    text = fast.post("/predict", content=b"{}", headers={**key, "content-type": "text/plain"})
    rows = fast.post("/predict_rows", json={"rows": []}, headers={**key, "x-request-id": "mine-1"})
    answered = fast.post("/predict", json={"records": record}, headers=key)
    statuses = [r.status_code for r in (missing, wrong, declared, streamed, text, rows, answered)]
    assert statuses == [401, 401, 413, 413, 415, 400, 200]
    assert "missing API key" in missing.json()["error"] and "invalid API key" in wrong.json()["error"]
    assert missing.headers["www-authenticate"] == 'Bearer realm="inference"'
    assert declared.json()["error"] == streamed.json()["error"] == "body: larger than the limit of 4000 bytes"
    assert "content-type: expected application/json" in text.json()["error"]
    assert rows.json()["request_id"] == rows.headers["x-request-id"] == "mine-1"
    for refusal in (missing, wrong, declared, streamed, text):
        assert refusal.headers["x-request-id"] == refusal.json()["request_id"]
    assert [status for _, status in recorded] == [401, 401, 413, 413, 415, 400]
    assert reached == []  # the app behind it saw none of them


def test_an_unexpected_error_on_the_fast_path_is_a_500_with_a_request_id_and_its_traceback_logged(
    client: TestClient,
    record: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from serving import responses

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(responses, "predict", broken)
    fast = TestClient(FastPathMiddleware(teapot_app([]), api_key="", max_bytes=10_000))
    with caplog.at_level(logging.ERROR, logger="serving.fastpath"):
        answer = fast.post("/predict", json={"records": record})
    assert answer.status_code == 500
    assert answer.json()["request_id"] == answer.headers["x-request-id"]
    assert "internal error" in answer.json()["error"] and "a bug" not in answer.json()["error"]
    assert "RuntimeError: a bug" in caplog.text


def test_a_body_that_stops_arriving_is_a_408(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from serving import fastpath

    monkeypatch.setattr(fastpath, "BODY_TIMEOUT_S", 0.2)
    sent: list[Any] = []
    parts = [{"type": "http.request", "body": b'{"records": ', "more_body": True}]

    async def receive() -> Any:
        if parts:
            return parts.pop()
        await asyncio.sleep(60)  # the rest never comes

    async def send(message: Any) -> None:
        sent.append(message)

    app = FastPathMiddleware(teapot_app([]), api_key="", max_bytes=10_000)
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [], "query_string": b""}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    assert sent[0]["status"] == 408
    assert orjson.loads(sent[1]["body"])["error"] == "body: not received whole within 0.2 s"


def test_the_repository_extension_tells_what_is_loaded_and_refuses_load_and_unload(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    name = champion.settings.model_name
    assert "model_repository" in client.get("/v2").json()["extensions"]
    index = client.post("/v2/repository/index")
    assert index.status_code == 200
    (entry,) = index.json()  # the gate named it challenger too, then it was promoted
    assert entry == {
        "name": name,
        "version": champion.version,
        "state": "READY",
        "reason": "alias champion; alias challenger",
    }
    for action in ("load", "unload"):
        refused = client.post(f"/v2/repository/models/{name}/{action}")
        assert refused.status_code == 403 and f"{action} is refused" in refused.json()["error"]
        assert refused.json()["request_id"]
    assert client.get(f"/v2/models/{name}").json()["versions"] == [champion.version]
    missing = client.post(f"/v2/models/{name}/versions/999/infer", json=infer_body([record]))
    assert missing.status_code == 404 and "'999' of" in missing.json()["error"]
    assert "is not registered" in client.get(f"/v2/models/{name}/versions/999").json()["error"]


def test_a_models_own_predict_route_answers_as_predict_on_the_fast_path_and_behind_it(
    client: TestClient, champion: Registered, record: dict[str, Any]
) -> None:
    """``/v2/models/{name}[/versions/{v}]/predict``: named features for any model served, the same answer
    as ``/predict`` (which answers for the default model), refused like the infer routes."""
    from serving.http import is_protected, route_of

    name, version = champion.settings.model_name, champion.version
    reached: list[str] = []
    fast = TestClient(FastPathMiddleware(teapot_app(reached), api_key="sesame"))
    key = {"authorization": "Bearer sesame"}
    default = client.post("/predict", json={"records": record}).json()
    for path in (f"/v2/models/{name}/predict", f"/v2/models/{name}/versions/{version}/predict"):
        for answered in (
            fast.post(path, json={"records": record}, headers=key),
            client.post(path, json={"records": record}),
        ):
            assert answered.status_code == 200, answered.text
            body = answered.json()
            assert body["model_name"] == name and body["model_version"] == version
            assert body["predictions"] == default["predictions"]
    assert fast.post(f"/v2/models/{name}/predict", json={"records": record}).status_code == 401
    for app in (fast, client):
        unknown = app.post("/v2/models/nope/predict", json={"records": record}, headers=key)
        assert unknown.status_code == 404 and "not served here" in unknown.json()["error"]
        assert unknown.headers["x-request-id"] == unknown.json()["request_id"]
        missing = app.post(f"/v2/models/{name}/versions/999/predict", json={"records": record}, headers=key)
        assert missing.status_code == 404 and "is not registered" in missing.json()["error"]
    assert reached == []
    assert is_protected(f"/v2/models/{name}/predict") and route_of(f"/v2/models/{name}/predict") == "predict"
    assert not is_protected("/v2/models/predict-me") and route_of(f"/v2/models/{name}/infer") == "infer"
