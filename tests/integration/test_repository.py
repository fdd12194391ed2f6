"""The model repository on a real `bentoml serve` (two workers): two registered models, a challenger and a
version pinned by path, called over REST (httpx, KServe's REST client) and gRPC (Triton's and KServe's
clients), each answer from the version it names, and the refusals of the versions it must not serve."""

import json
import subprocess
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
from tests.conftest import Registered, make_settings, train_and_register
from tests.integration.conftest import start_with_grpc, use
from tests.integration.test_grpc import KSERVE_CLIENT, triton_inputs

pytestmark = pytest.mark.integration

SPEC = datasets.BREAST_CANCER
PASSING = GateConfig(max_regression={}, latency_p99_ms=100)
FAILING = GateConfig(metric_floors={"roc_auc": 1.01}, max_regression={}, latency_p99_ms=100)
ANYTHING = GateConfig(metric_floors={}, max_regression={}, latency_p99_ms=100)  # a weak model passes
SECOND = "second-classifier"


def rest_infer(url: str, name: str, version: str | None, rows: list[dict[str, Any]]) -> httpx.Response:
    body = {
        "inputs": [
            {"name": f, "shape": [len(rows), 1], "datatype": "FP64", "data": [r[f] for r in rows]}
            for f in SPEC.feature_names
        ]
    }
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    return httpx.post(url + path, json=body, timeout=30)


def kserve(venv: Path, url: str, name: str, version: str | None, rows_file: Path, transport: str) -> Any:
    argv = [str(venv / "bin" / "python"), str(KSERVE_CLIENT), "--url", url, "--model", name,
            "--rows", str(rows_file), "--transport", transport]  # fmt: skip
    if version:
        argv += ["--version", version]
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return json.loads(ran.stdout.strip().splitlines()[-1])


def test_two_models_a_challenger_and_a_pinned_version_over_rest_and_grpc_with_four_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: datasets.Split
) -> None:
    grpc_port = free_port()
    base = make_settings(tmp_path / "state", serve_workers=2, grpc_port=grpc_port)
    first = base.model_name
    settings = use(base.model_copy(update={"serve_models": [first, SECOND]}), monkeypatch)
    champion = train_and_register(settings, split, "logistic_regression", promote_it=True, config=PASSING)
    pinned = train_and_register(settings, split, "random_forest", promote_it=False, config=PASSING)
    challenger = train_and_register(
        settings, split, "hist_gradient_boosting", promote_it=False, config=PASSING
    )
    rejected = train_and_register(settings, split, "logistic_regression", promote_it=False, config=FAILING)
    other = settings.model_copy(update={"model_name": SECOND})
    second = train_and_register(other, split, "weak_logistic_regression", promote_it=True, config=ANYTHING)
    assert rejected.gate.verdict == "rejected"
    kserve_venv = ensure_venv(next(p for p in PEERS if p.slug == "kserve"))  # before the service: it is slow
    rows = datasets.records(split.holdout.head(5), SPEC)
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps({f: [r[f] for r in rows] for f in SPEC.feature_names}))
    grpc_url = f"{settings.serve_host}:{grpc_port}"
    service = LocalService(settings)
    try:
        start_with_grpc(service, grpc_port)  # every worker serves gRPC on the one port
        url = service.url

        index = httpx.post(f"{url}/v2/repository/index", timeout=10).json()
        assert {(e["name"], e["version"], e["reason"]) for e in index} >= {
            (first, champion.version, "alias champion"),
            (first, challenger.version, "alias challenger"),
            (SECOND, second.version, "alias champion; alias challenger"),  # one version, two aliases
        }
        assert {e["state"] for e in index} == {"READY"}

        # every (model, version) asked for, by every client: the same answer, from that version
        asked: list[tuple[str, str | None, Registered]] = [
            (first, None, champion),
            (first, challenger.version, challenger),
            (first, pinned.version, pinned),  # no alias: loaded on its first request
            (SECOND, None, second),
        ]
        grpc_client = triton.InferenceServerClient(grpc_url)
        answers: dict[tuple[str, str | None], list[float]] = {}
        for name, version, expected in asked:
            response = rest_infer(url, name, version, rows)
            assert response.status_code == 200, response.text
            rest = response.json()
            assert rest["model_name"] == name and rest["model_version"] == expected.version
            assert rest["parameters"]["run_id"] == expected.run_id
            outputs = {o["name"]: np.ravel(o["data"]).tolist() for o in rest["outputs"]}
            answers[(name, version)] = outputs["probabilities"]

            result = grpc_client.infer(name, triton_inputs(rows), model_version=version or "")
            assert result.get_response().model_version == expected.version
            assert result.as_numpy("label").ravel().tolist() == outputs["label"]
            np.testing.assert_allclose(result.as_numpy("probabilities").ravel(), outputs["probabilities"])

            called = [kserve(kserve_venv, grpc_url, name, version, rows_file, "grpc")]
            if version is None:  # KServe's REST client puts no version in the path
                called.append(kserve(kserve_venv, url, name, None, rows_file, "rest"))
            for answer in called:
                assert answer["ready"] is True
                for mode in ("typed", "raw"):
                    got = answer[mode]
                    assert got["model_version"] == expected.version and got["id"] == f"kserve-{mode}"
                    assert got["outputs"]["label"] == outputs["label"]
                    np.testing.assert_allclose(got["outputs"]["probabilities"], outputs["probabilities"])
        # four versions of two models, four different models: four different answers
        assert len({tuple(np.round(p, 6)) for p in answers.values()}) == 4

        metadata = httpx.get(f"{url}/v2/models/{first}", timeout=10).json()
        assert metadata["versions"][:2] == [champion.version, challenger.version]
        pinned_metadata = httpx.get(f"{url}/v2/models/{first}/versions/{pinned.version}", timeout=10)
        assert pinned_metadata.status_code == 200 and pinned_metadata.json()["versions"][0] == pinned.version

        # what must not be served is refused, naming why, over both transports
        refusals = [(first, "999", 404, "is not registered", "NOT_FOUND"),
                    (first, rejected.version, 409, "gate verdict 'rejected'", "FAILED_PRECONDITION"),
                    ("third-classifier", None, 404, "not served here", "NOT_FOUND")]  # fmt: skip
        for name, version, status, words, code in refusals:
            refused = rest_infer(url, name, version, rows)
            assert refused.status_code == status and words in refused.text, refused.text
            assert refused.headers["x-request-id"]
            with pytest.raises(InferenceServerException) as raised:
                grpc_client.infer(name, triton_inputs(rows), model_version=version or "")
            assert raised.value.status() == f"StatusCode.{code}"
            assert words in (raised.value.message() or "")
        grpc_client.close()
        for action in ("load", "unload"):
            control = httpx.post(f"{url}/v2/repository/models/{first}/{action}", timeout=10)
            assert control.status_code == 403 and "move an alias" in control.text

        records = [r for r in read_records(settings.inference_log_dir) if not r.get("status")]
        served = {(r["model"], r["version"]) for r in records}
        assert served == {(n, e.version) for n, _, e in asked}
    finally:
        service.stop()
