"""The Open Inference Protocol over gRPC on a real `bentoml serve` (two workers, TLS, an API key), called by
Triton's `tritonclient.grpc` and KServe's `InferenceGRPCClient`, and a hot swap under gRPC load."""

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from benchmarks.peers import PEERS, ensure_venv
from flows.deploy import LocalService
from flows.gate import GateConfig
from flows.processes import free_port
from models import datasets
from models.inference_records import read_records
from tests.conftest import make_settings, train_and_register
from tests.integration.conftest import start_with_grpc, tls_pair, use

pytestmark = pytest.mark.integration

SPEC = datasets.BREAST_CANCER
SECRET = "grpc-test-key"
ANY_CHAMPION = GateConfig(max_regression={}, latency_p99_ms=100)
KSERVE_CLIENT = Path(__file__).with_name("kserve_client.py")


def triton_inputs(rows: list[dict[str, Any]]) -> list[triton.InferInput]:
    inputs = []
    for feature in SPEC.feature_names:
        tensor = triton.InferInput(feature, [len(rows), 1], "FP64")
        tensor.set_data_from_numpy(np.array([[r[feature]] for r in rows], dtype=np.float64))
        inputs.append(tensor)
    return inputs


def rest_answer(url: str, cert: Path, rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    body = {
        "inputs": [
            {"name": f, "shape": [len(rows), 1], "datatype": "FP64", "data": [r[f] for r in rows]}
            for f in SPEC.feature_names
        ]
    }
    headers = {"authorization": f"Bearer {SECRET}"}
    response = httpx.post(
        f"{url}/v2/models/{name}/infer", json=body, headers=headers, verify=str(cert), timeout=10
    )
    assert response.status_code == 200, response.text
    return {o["name"]: np.ravel(o["data"]).tolist() for o in response.json()["outputs"]}


class GrpcLoad(threading.Thread):
    """Single-row ModelInfer calls back to back on one channel until stopped: versions seen and failures."""

    def __init__(self, url: str, cert: Path, name: str, row: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.client = triton.InferenceServerClient(url, ssl=True, root_certificates=str(cert))
        self.name, self.inputs = name, triton_inputs([row])
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        headers = {"authorization": f"Bearer {SECRET}"}
        while not self.done.is_set():
            try:
                result = self.client.infer(self.name, self.inputs, headers=headers, client_timeout=10)
                self.versions.append(result.get_response().model_version)
            except InferenceServerException as exc:
                self.failures.append(str(exc))
        self.client.close()


def test_grpc_with_tritons_and_kserves_clients_and_a_hot_swap_with_no_failed_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: datasets.Split
) -> None:
    cert, key = tls_pair(tmp_path)
    grpc_port = free_port()
    settings = use(
        make_settings(
            tmp_path / "state", serve_workers=2, grpc_port=grpc_port, api_key=SECRET, tls_certfile=cert,
            tls_keyfile=key,
        ),
        monkeypatch,
    )  # fmt: skip
    first = train_and_register(settings, split, "logistic_regression", promote_it=True, config=ANY_CHAMPION)
    kserve_venv = ensure_venv(next(p for p in PEERS if p.slug == "kserve"))  # before the service: it is slow
    rows = datasets.records(split.holdout.head(6), SPEC)
    name, url = settings.model_name, f"{settings.serve_host}:{grpc_port}"
    service = LocalService(settings)
    try:
        start_with_grpc(service, grpc_port)  # every worker serves gRPC on the one port
        rest = rest_answer(service.url, cert, rows, name)

        # Triton's client: raw contents both ways, TLS verified, the API key in the metadata
        client = triton.InferenceServerClient(url, ssl=True, root_certificates=str(cert))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
        metadata = client.get_model_metadata(name, as_json=True)
        assert metadata["versions"] == [first.version] and len(metadata["inputs"]) == len(SPEC.feature_names)
        headers = {"authorization": f"Bearer {SECRET}", "x-request-id": "triton-call-1"}
        result = client.infer(name, triton_inputs(rows), headers=headers)
        assert result.as_numpy("label").ravel().tolist() == rest["label"]
        np.testing.assert_allclose(result.as_numpy("probabilities").ravel(), rest["probabilities"], rtol=1e-6)
        response = result.get_response(as_json=True)
        assert response["model_version"] == first.version
        assert response["parameters"]["request_id"]["string_param"] == "triton-call-1"
        assert response["parameters"]["run_id"]["string_param"] == first.run_id
        with pytest.raises(InferenceServerException) as refused:
            client.infer(name, triton_inputs(rows))
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        assert "missing API key" in (refused.value.message() or "")
        with pytest.raises(InferenceServerException) as unknown:
            client.infer("no-such-model", triton_inputs(rows), headers=headers)
        assert unknown.value.status() == "StatusCode.NOT_FOUND"
        client.close()

        # KServe's client, from KServe's own venv: typed contents and raw
        rows_file = tmp_path / "rows.json"
        rows_file.write_text(json.dumps({f: [r[f] for r in rows] for f in SPEC.feature_names}))
        argv = [str(kserve_venv / "bin" / "python"), str(KSERVE_CLIENT), "--url", url, "--model", name,
                "--rows", str(rows_file), "--cert", str(cert), "--api-key", SECRET]  # fmt: skip
        ran = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr[-3000:]
        kserve = json.loads(ran.stdout.strip().splitlines()[-1])
        assert kserve["ready"] is True
        for mode in ("typed", "raw"):
            answer = kserve[mode]
            assert answer["id"] == f"kserve-{mode}" and answer["model_version"] == first.version
            assert answer["outputs"]["label"] == rest["label"]
            np.testing.assert_allclose(answer["outputs"]["probabilities"], rest["probabilities"], rtol=1e-6)
            assert answer["parameters"]["run_id"] == first.run_id and answer["parameters"]["logged"] is True

        # a hot swap under gRPC load: no call fails, and the new version answers
        load = GrpcLoad(url, cert, name, rows[0])
        load.start()
        time.sleep(2)
        second = train_and_register(
            settings, split, "logistic_regression", promote_it=True, config=ANY_CHAMPION
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and load.versions[-20:].count(second.version) < 20:
            time.sleep(0.5)
        load.done.set()
        load.join(30)
        seen = Counter(load.versions)
        assert load.failures == [] and seen[first.version] > 0 and seen[second.version] >= 20, seen
        last = load.versions.index(second.version)
        assert set(load.versions[last:]) == {second.version}  # one channel, one worker: never back

        records = list(read_records(settings.inference_log_dir))
        answered = [r for r in records if r.get("route") == "infer" and not r.get("status")]
        assert any(r["request_id"] == "triton-call-1" and r["rows"] == 6 for r in answered)
        # every answer is a record: REST's, Triton's, KServe's two and the load's
        assert len(answered) == 4 + len(load.versions)
        refusals = [r for r in records if r.get("status") == 401]
        assert refusals and refusals[0]["route"] == "infer"
    finally:
        service.stop()
