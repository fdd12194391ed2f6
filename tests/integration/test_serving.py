"""A real `bentoml serve` with several workers, under load from a separate process, over loopback.

The first test is also the data-to-prediction path: the pipeline deploys, the service answers, a second
run moves it to v2, and the service stops.
"""

import http.client
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest

from flows.checks import DeployChecks, Replica, check_version
from flows.deploy import LocalService, predict, served_version
from flows.faults import register_broken_version
from flows.gate import GateConfig
from flows.tracking import connect
from flows.traffic import plan_traffic, replay
from flows.training import training_pipeline
from models import datasets
from models.inference_records import read_records
from models.registry import CHAMPION
from models.settings import Settings
from serving import bentoml_fixes
from tests.conftest import make_settings
from tests.integration.conftest import listening_sockets, tls_pair, use
from tests.integration.load import finish_load, start_load

pytestmark = pytest.mark.integration

# these tests swap between recipes, better or not; the load shares the two cores with the gate's timing
ANY_CHAMPION = GateConfig(max_regression={}, latency_p99_ms=50)
UNDER_LOAD = DeployChecks(probe_requests=50, latency_p99_ms=1000, bake_s=2, bake_p99_ms=2000)


def test_swap_under_load_drops_nothing_and_a_broken_version_never_serves(
    service: LocalService, split: datasets.Split, tmp_path: Path
) -> None:
    settings = service.settings
    first = training_pipeline(gate_config=ANY_CHAMPION, deploy_checks=UNDER_LOAD)
    assert first.served_url == service.url
    record = datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)[0]
    out, stop = tmp_path / "load.jsonl", tmp_path / "stop"
    # the load lasts until the swaps below are done (a fixed length could end before v2 is served)
    load = start_load(
        f"{service.url}/predict", {"records": [record]}, out, seconds=180, stop_file=str(stop), rate="150"
    )
    time.sleep(4)

    second = training_pipeline(
        recipe="hist_gradient_boosting", gate_config=ANY_CHAMPION, deploy_checks=UNDER_LOAD
    )
    assert second.served_url == service.url and second.version == "2"
    client = connect(settings)
    broken = register_broken_version(client, settings, "2", "unloadable")
    client.set_registered_model_alias(settings.model_name, CHAMPION, broken)
    time.sleep(3)  # several follower polls on every worker
    assert {served_version(service.url, settings.model_name) for _ in range(20)} == {"2"}
    assert httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200
    metrics = httpx.get(f"{service.url}/metrics", timeout=5).text
    assert 'mlops_alias_events_total{event="swap_failed"}' in metrics
    # the fixes to BentoML's internals report themselves: a metric and a start-up line per worker
    for patch in (bentoml_fixes.TIMEOUT_PATCH, bentoml_fixes.LISTENER_PATCH):
        assert f'mlops_patch_applied{{patch="{patch}"}} 1.0' in metrics, metrics
        assert service.log_file.read_text().count(f"patch {patch} (") == 2  # serve_workers=2

    time.sleep(1)  # answers from v2 after the refused swap, too
    stop.touch()
    outcomes = finish_load(load, out)
    statuses = Counter(o["status"] for o in outcomes)
    assert statuses == {200: len(outcomes)}, statuses
    runs = {"1": first.run_id, "2": second.run_id}
    assert all(runs[o["version"]] == o["run_id"] for o in outcomes)  # each answer names one version
    versions = [o["version"] for o in outcomes]
    assert set(versions) == {"1", "2"} and versions[-1] == "2"
    assert len(outcomes) > 200

    # the inference log holds exactly one record per served prediction
    logged = Counter(r["request_id"] for r in read_records(settings.inference_log_dir))
    served = [o["request_id"] for o in outcomes]
    assert all(logged[request_id] == 1 for request_id in served)
    by_route = Counter(r["route"] for r in read_records(settings.inference_log_dir))
    per_deploy = 1 + UNDER_LOAD.probe_requests  # each deploy's golden check and latency probe
    assert by_route["predict"] == len(served) + 2 * per_deploy
    assert "swap_failed" in service.log_tail(200) and f"v{broken}" in service.log_tail(200)

    # single-row traffic on the batchable route is merged into fewer model calls
    def one_row(_: int) -> int:
        response = httpx.post(f"{service.url}/predict_rows", json={"rows": [record]}, timeout=30)
        assert response.status_code == 200 and response.json()[0]["model_version"] == "2"
        return 1

    with ThreadPoolExecutor(max_workers=32) as pool:
        assert sum(pool.map(one_row, range(256))) == 256
    batches = [r["rows"] for r in read_records(settings.inference_log_dir) if r["route"] == "predict_rows"]
    assert sum(batches) == 256 and max(batches) > 1 and len(batches) < 256

    # what a consumer sees besides: probes, metrics, answers naming version and run, a clear 400
    assert httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"{service.url}/livez", timeout=5).status_code == 200
    assert "bentoml_service_request" in httpx.get(f"{service.url}/metrics", timeout=5).text
    body = predict(service.url, datasets.records(split.holdout.head(5), datasets.BREAST_CANCER))
    assert (body["model_version"], body["run_id"]) == ("2", second.run_id)
    assert [p["label"] for p in body["predictions"]] == split.y_holdout.head(5).tolist()
    bad = httpx.post(f"{service.url}/predict", json={"records": [{"mean_radius": 1.0}]}, timeout=5)
    assert bad.status_code == 400 and "missing features" in bad.text

    # the traffic generator replays held-out rows and keeps their labels for the monitor
    labels_path = tmp_path / "labels.csv"
    planned = plan_traffic(split.holdout, datasets.BREAST_CANCER, 30, [], None)
    assert replay(service.url, planned, datasets.BREAST_CANCER, labels_path, batch=3) == 10
    labels = pd.read_csv(labels_path)
    logged_ids = {r["request_id"] for r in read_records(settings.inference_log_dir)}
    assert len(labels) == 30 and set(labels["request_id"]) <= logged_ids

    pid = service.pid()
    assert pid is not None and service.stop()
    assert service.pid() is None
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{service.url}/readyz", timeout=2)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return tls_pair(tmp_path)


def test_api_key_and_tls_on_a_real_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None, tls_files: tuple[Path, Path], split
) -> None:
    cert, key = tls_files
    secret = "s3cret-token-for-tests"
    settings = use(
        make_settings(tmp_path / "state", api_key=secret, tls_certfile=cert, tls_keyfile=key), monkeypatch
    )
    service = LocalService(settings)
    try:
        assert training_pipeline(deploy_target="none").verdict == "champion"
        service.start()
        service.wait_ready(settings.serve_start_timeout_s)
        assert service.url.startswith("https://")
        replica = Replica(service.url, api_key=secret, verify=str(cert))
        assert check_version(replica, settings.model_name, "1", 60, streak=3).passed
        body = {"records": datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)}
        with httpx.Client(verify=str(cert), timeout=10) as client:  # verifies the server's certificate
            assert client.post(f"{service.url}/predict", json=body).status_code == 401
            wrong = client.post(f"{service.url}/predict", json=body, headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "invalid API key" in wrong.json()["error"]
            assert wrong.headers["www-authenticate"].startswith("Bearer")
            ok = client.post(
                f"{service.url}/predict", json=body, headers={"authorization": f"Bearer {secret}"}
            )
            assert ok.status_code == 200 and ok.json()["model_version"] == "1"
            assert client.get(f"{service.url}/v2/health/ready").status_code == 200  # probes stay open
        with pytest.raises(httpx.ConnectError):  # an unverified certificate is refused by a real client
            httpx.get(f"{service.url}/v2/health/ready", timeout=5)
        assert secret not in service.log_tail(500)
    finally:
        service.stop()


def test_new_connections_are_spread_over_both_workers(
    serving_env: Settings, split: datasets.Split, tmp_path: Path
) -> None:
    """A client pool opened at once is not taken whole by the first worker to wake (SO_REUSEPORT)."""
    registry = serving_env.resolved_tracking_uri
    settings = make_settings(tmp_path / "state", tracking_uri=registry, serve_workers=2)
    service = LocalService(settings)
    body = {"records": datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)}
    try:
        service.start()
        service.wait_ready(settings.serve_start_timeout_s)
        host, port = settings.serve_host, settings.serve_port
        deadline = time.monotonic() + settings.serve_start_timeout_s
        while listening_sockets(port) < 2 and time.monotonic() < deadline:  # readyz: one worker is ready
            time.sleep(0.2)
        assert listening_sockets(port) == 2  # one socket per worker; the shared one no longer listens
        pool = [http.client.HTTPConnection(host, port, timeout=10) for _ in range(16)]
        for connection in pool:  # the whole pool connects before any request, as a client's pool does
            connection.connect()
        payload = json.dumps(body)
        for _ in range(20):
            for connection in pool:
                connection.request("POST", "/predict", payload, {"content-type": "application/json"})
            for connection in pool:
                response = connection.getresponse()
                assert response.status == 200, response.read()
                response.read()
        for connection in pool:
            connection.close()
        per_worker = Counter(
            "-".join(segment.name.split("-")[1:3]) for segment in settings.inference_log_dir.glob("*.jsonl")
            for _ in segment.read_text().splitlines()
        )  # fmt: skip
        assert sum(per_worker.values()) == 16 * 20
        assert len(per_worker) == 2, per_worker
        # 16 connections hashed over two sockets: all on one worker has probability 2 / 65,536
        assert min(per_worker.values()) >= 20, per_worker
    finally:
        service.stop()
