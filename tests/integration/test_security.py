"""Security of the served model, on real servers: an MLflow tracking server reached through a URI with a
password, a pipeline run through it, and `bentoml serve` with an API key and TLS.

* inference routes (both OIP infer routes, /predict, /predict_rows) need the key: missing or wrong is a
  401 with a JSON error; health and metadata stay open;
* TLS is verified by a real client: the service's certificate passes, anything else is refused;
* no admin action over HTTP: the OpenAPI documents and the route table have no promote, rollback, alias or
  model-repository route, and such requests get 404 or 405 even with the key;
* no secret (the API key, the tracking password) in the service's output, the inference log, the Prefect
  logs and artifacts of the run, the MLflow run (params, tags, artifacts) and the version's tags, nor in
  any error message the service sends.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import mlflow.artifacts
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from flows.processes import free_port, supervised, wait_http
from flows.stack import MLFLOW_SERVER_ENV
from flows.tracking import connect
from flows.training import training_pipeline
from models import datasets
from models.registry import CHAMPION, Tag
from models.settings import Settings
from serving.registry import MlflowReader, RegistryReadError, RestReader, direct_reader
from tests.conftest import make_settings, settings_env
from tests.integration.conftest import tls_pair
from tests.integration.isolated import IsolatedService, serving

pytestmark = pytest.mark.integration

API_KEY = "k3y-0f-the-inference-routes-7d1c"
PASSWORD = "tr4cking-pa55word-91f2"
SECRETS = (API_KEY, PASSWORD)
ADMIN_PATHS = [
    "/promote", "/rollback", "/deploy", "/aliases", "/admin", "/v2/models/{m}/promote",
    "/v2/models/{m}/aliases/champion", "/v2/models/{m}/versions/1/promote", "/v2/models/{m}/rollback",
    "/api/2.0/mlflow/registered-models/alias", "/models/{m}/champion",
]  # fmt: skip
# The OIP repository extension's load and unload are served only to refuse: the registry's aliases decide.
REFUSED_PATHS = ["/v2/repository/models/{m}/load", "/v2/repository/models/{m}/unload"]
SERVED_PATHS = {
    "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
    "/v2/models/{name}/versions/{version}", "/v2/models/{name}/versions/{version}/ready",
    "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer", "/predict",
    "/v2/models/{name}/predict", "/v2/models/{name}/versions/{version}/predict", "/predict_rows",
    "/healthz", "/livez", "/readyz", "/metrics",
    "/v2/repository/index", "/v2/repository/models/{name}/{action}",  # read-only, and refusals
    "/v2/models/{name}/feedback",  # ground-truth labels, behind the API key as inference
}  # fmt: skip
# BentoML's own documents and static files, and the catch-all that answers 404 under /v2
INFRASTRUCTURE_PATHS = {
    "/",
    "/static_content",
    "/schema.json",
    "/openapi.json",
    "/docs.json",
    "/docs",  # Swagger UI over /openapi.json
    "/docs/oauth2-redirect",
    "/v2/{path:path}",
}
ADMIN_WORDS = (
    "promot",
    "rollback",
    "alias",
    "champion",
    "deploy",
    "admin",
    "registered-models",
)


@dataclass(frozen=True)
class Secured:
    service: IsolatedService
    settings: Settings
    cert: Path
    flow_run_id: str
    record: dict[str, float | str]
    mlflow_log: Path

    @property
    def url(self) -> str:
        return self.service.url

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.Client(base_url=self.url, verify=str(self.cert), headers=headers, timeout=15)


@contextmanager
def tracking_server(state: Path, log: Path) -> Iterator[int]:
    """``mlflow server`` on 127.0.0.1 (no auth of its own: the password only travels in the URI)."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{state / 'server.db'}",
        "--default-artifact-root", (state / "artifacts").as_uri(), "--no-serve-artifacts", "--workers", "1",
    ]  # fmt: skip
    with supervised(command, log, MLFLOW_SERVER_ENV) as process:
        wait_http(
            f"http://127.0.0.1:{port}/health",
            90,
            exited=lambda: process.poll() is not None,
            what="mlflow server",
            setting="the test's limit (90 s)",
            log_file=log,
        )
        yield port


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: None, split: datasets.Split
) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("secured")
    cert, key = tls_pair(folder)
    (folder / "mlflow").mkdir()
    mlflow_log = folder / "mlflow-server.log"
    with tracking_server(folder / "mlflow", mlflow_log) as port, pytest.MonkeyPatch.context() as patch:
        settings = make_settings(
            folder / "state",
            tracking_uri=f"http://mlops:{PASSWORD}@127.0.0.1:{port}",
            api_key=API_KEY,
            tls_certfile=cert,
            tls_keyfile=key,
            serve_workers=1,
        )
        for name, value in settings_env(settings).items():
            patch.setenv(name, value)
        state = training_pipeline(deploy_target="none", return_state=True)
        assert state.is_completed(), state
        assert state.result().verdict == "champion"
        record = datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)[0]
        with serving(settings) as service:
            yield Secured(service, settings, cert, str(state.state_details.flow_run_id), record, mlflow_log)


# --- the API key ----------------------------------------------------------------------------------------


def inference_requests(secured: Secured) -> list[tuple[str, dict[str, Any]]]:
    model, version = secured.settings.model_name, "1"
    tensors = [
        {"name": k, "shape": [1, 1], "datatype": "FP64", "data": [v]} for k, v in secured.record.items()
    ]
    return [
        (f"/v2/models/{model}/infer", {"inputs": tensors}),
        (f"/v2/models/{model}/versions/{version}/infer", {"inputs": tensors}),
        ("/predict", {"records": secured.record}),
        ("/predict_rows", {"rows": [secured.record]}),
    ]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Bearer {API_KEY}x", f"bearer {API_KEY}",
     f"Basic {API_KEY}", API_KEY, f"Bearer {API_KEY[:-1]}", f"Bearer  {API_KEY}"],
)  # fmt: skip
def test_inference_routes_refuse_a_missing_or_wrong_key(secured: Secured, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    with secured.client(key=None) as client:
        for path, body in inference_requests(secured):
            response = client.post(path, json=body, headers=headers)
            assert response.status_code == 401, (path, authorization, response.text)
            assert "API key" in response.json()["error"]
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert API_KEY not in response.text
        # the key elsewhere than the Authorization header does not count either
        assert client.post(f"/predict?api_key={API_KEY}", json={"records": secured.record}).status_code == 401


def test_inference_routes_answer_with_the_key_and_probes_stay_open(secured: Secured) -> None:
    with secured.client() as client:
        for path, body in inference_requests(secured):
            response = client.post(path, json=body)
            assert response.status_code == 200, (path, response.text)
    with secured.client(key=None) as anonymous:
        for path in [
            "/v2/health/ready",
            "/v2/health/live",
            "/readyz",
            "/livez",
            f"/v2/models/{secured.settings.model_name}",
        ]:
            assert anonymous.get(path).status_code == 200, path


def test_the_key_is_compared_in_constant_time() -> None:
    import inspect

    from serving.fastpath import FastPathMiddleware
    from serving.http import ApiKeyMiddleware, authorization_problem

    # The one comparison, shared by the API key middleware and the fast path's edge.
    source = inspect.getsource(authorization_problem)
    assert "hmac.compare_digest(" in source and "==" not in source.replace("is None", "")
    for caller in (ApiKeyMiddleware.__call__, FastPathMiddleware.admit):
        calling = inspect.getsource(caller)
        assert "authorization_problem(" in calling and "==" not in calling.replace("is None", "")


# --- TLS ------------------------------------------------------------------------------------------------


def test_tls_is_verified_by_a_real_client(secured: Secured) -> None:
    assert secured.url.startswith("https://")
    with secured.client() as client:
        assert client.get("/v2/health/ready").status_code == 200  # the service's own certificate verifies
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{secured.url}/v2/health/ready", timeout=5)  # the system's authorities do not know it
    localhost = secured.url.replace("127.0.0.1", "localhost")
    with pytest.raises(httpx.ConnectError):  # a name the certificate does not carry
        httpx.get(f"{localhost}/v2/health/ready", verify=str(secured.cert), timeout=5)
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
        httpx.get(secured.url.replace("https://", "http://") + "/v2/health/ready", timeout=5)


# --- no admin action over HTTP --------------------------------------------------------------------------


def test_no_admin_route_is_published_or_served(secured: Secured, tmp_path: Path) -> None:
    with secured.client() as client:
        documented = {
            path for doc in ("/openapi.json", "/docs.json") for path in client.get(doc).json()["paths"]
        }
        assert not [p for p in documented if any(word in p.lower() for word in ADMIN_WORDS)], documented
        assert documented <= SERVED_PATHS, documented
        for template in ADMIN_PATHS:
            path = template.format(m=secured.settings.model_name)
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                response = client.request(method, path, json={"version": "1", "alias": "champion"})
                assert response.status_code in (404, 405), (method, path, response.status_code)
        index = client.post("/v2/repository/index").json()
        for template in REFUSED_PATHS:
            path = template.format(m=secured.settings.model_name)
            response = client.post(path)
            assert response.status_code == 403 and "refused" in response.json()["error"], response.text
        assert client.post("/v2/repository/index").json() == index  # nothing loaded or unloaded
    served_routes = route_table(secured.settings, tmp_path / "state")
    served_paths = {route.split(" ", 1)[1] for route in served_routes}
    assert served_paths <= SERVED_PATHS | INFRASTRUCTURE_PATHS, served_paths - SERVED_PATHS
    assert not [r for r in served_routes if any(word in r.lower() for word in ADMIN_WORDS)], served_routes


ROUTE_TABLE = """
from starlette.testclient import TestClient
from serving.service import ModelService, api

def walk(routes, prefix=""):
    for route in routes:
        path = prefix + (getattr(route, "path", None) or "")
        inner = getattr(route, "original_router", None) or route  # FastAPI's included routers
        if getattr(inner, "routes", None):
            walk(inner.routes, path)
        else:
            print(",".join(sorted(getattr(route, "methods", None) or [])), path or "/")

app = ModelService.to_asgi()
with TestClient(app):  # the service's own routes are bound to its app when it starts
    walk(app.routes)  # BentoML's
    walk(api.routes)  # ours, mounted at /
"""


def route_table(settings: Settings, state: Path) -> list[str]:
    """Every route of the service's app as it runs (BentoML's and ours), built in a process of its own."""
    env = {**os.environ, **settings.model_copy(update={"state_dir": state}).to_env()}
    done = subprocess.run(
        [sys.executable, "-c", ROUTE_TABLE], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    routes = done.stdout.splitlines()
    assert any(r.endswith(" /v2/models/{name}/infer") for r in routes), done.stdout + done.stderr[-3000:]
    return routes


# --- no secret anywhere ---------------------------------------------------------------------------------


def prefect_texts(flow_run_id: str) -> list[str]:
    async def read() -> list[str]:
        run = UUID(flow_run_id)
        async with get_client() as prefect:
            logs = await prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run])))
            artifacts = await prefect.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run]))
            )
            flow_run = await prefect.read_flow_run(run)
        return [*(log.message for log in logs), *(str(a.data) for a in artifacts), str(flow_run.parameters)]

    return asyncio.run(read())


def mlflow_texts(settings: Settings, folder: Path) -> list[str]:
    """Params, tags and metric names of every run, every version's tags, and every artifact file."""
    client = connect(settings)
    texts: list[str] = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            texts += [str(run.data.params), str(run.data.tags), str(list(run.data.metrics))]
            local = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, dst_path=str(folder / run.info.run_id)
            )
            texts += [p.read_text(errors="replace") for p in Path(local).rglob("*") if p.is_file()]
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name='{model.name}'"):
            texts.append(str(version.tags))
    return texts


def files_under(folder: Path) -> list[str]:
    return [
        p.read_text(errors="replace")
        for p in folder.rglob("*")
        if p.is_file() and p.stat().st_size < 50_000_000
    ]


def leaks(texts: list[str]) -> list[str]:
    return [f"{secret[:4]}... in {text[max(text.find(secret) - 80, 0):text.find(secret) + 40]!r}"
            for text in texts for secret in SECRETS if secret in text]  # fmt: skip


def test_no_secret_in_logs_artifacts_or_error_messages(secured: Secured, tmp_path: Path) -> None:
    with secured.client() as client:  # error answers of every kind, with the key
        client.post("/predict", content=b"{not json")
        client.post(f"/v2/models/{secured.settings.model_name}/infer", json={"inputs": "x"})
        client.get("/v2/models/other")
        client.post("/nope", json={})
    with secured.client(key=f"{API_KEY}-wrong") as client:
        answer = client.post("/predict", json={"records": secured.record})
        assert answer.status_code == 401 and API_KEY not in answer.text
    texts = [
        secured.service.log_file.read_text(errors="replace"),  # the service's stdout and stderr
        *files_under(secured.settings.inference_log_dir),
        *prefect_texts(secured.flow_run_id),
        *mlflow_texts(secured.settings, tmp_path),
        *files_under(secured.settings.state_path / "logs"),
    ]
    assert len(texts) > 10
    assert leaks(texts) == []


def test_no_secret_in_the_service_log_when_the_registry_fails(secured: Secured, tmp_path: Path) -> None:
    """An unreachable registry makes every alias check fail: the error must not carry the URI's password."""
    unreachable = secured.settings.model_copy(
        update={
            "tracking_uri": f"http://mlops:{PASSWORD}@127.0.0.1:{free_port()}",  # nothing listens there
            "serve_port": free_port(),
            "state_dir": tmp_path / "state",
        }
    )
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    service = IsolatedService(unreachable, tuple(env.items()))
    try:
        service.start()
        deadline = time.monotonic() + 60
        while "registry_error" not in service.log_tail(400) and time.monotonic() < deadline:
            time.sleep(0.5)
        log = service.log_file.read_text(errors="replace")
    finally:
        service.stop_all()
    assert "registry_error" in log, log[-2000:]
    assert leaks([log]) == []


def test_the_service_reads_the_registry_over_rest_as_the_mlflow_client_does(secured: Secured) -> None:
    """The serving path's MLflow-free reader, against the real ``mlflow server`` and the URI's credentials."""
    uri = secured.settings.resolved_tracking_uri
    direct, client = direct_reader(uri), MlflowReader(uri)
    assert isinstance(direct, RestReader) and PASSWORD not in direct.base
    name = secured.settings.model_name
    aliased = client.aliased(name, CHAMPION)
    model_id = aliased.tags[Tag.ONNX_URI].removeprefix("models:/")
    for store in (direct, client):
        assert store.aliased(name, CHAMPION) == aliased
        assert store.alias_version(name, CHAMPION) == aliased.version == "1"
        assert store.model_location(model_id) == client.model_location(model_id)
        assert store.run_artifact_uri(aliased.run_id) == client.run_artifact_uri(aliased.run_id)
        assert store.with_alias(CHAMPION) == [name] and store.with_alias("challenger-x") == []
        assert store.model_tags(name) == client.model_tags(name)
        with pytest.raises(RegistryReadError, match="alias challenger-x not found"):
            store.alias_version(name, "challenger-x")
