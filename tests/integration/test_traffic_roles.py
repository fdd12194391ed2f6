"""Traffic roles on a real `bentoml serve` (two workers) under load: the canary answers its share of
requests, one consumer sees one version on both workers and over gRPC, the shadow gets copies it never
answers, a change of share and a clear take effect within a poll, and no request fails."""

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as triton

from benchmarks.loadgen import spawn_load
from flows import split as traffic
from flows.deploy import LocalService
from flows.gate import GateConfig
from flows.gateway import gateway
from flows.processes import free_port
from models import datasets
from models.inference_records import read_records
from models.registry import CANARY, SHADOW
from models.traffic import ROUTING_HEADER, takes
from tests.conftest import make_settings, train_and_register
from tests.integration.conftest import start_with_grpc, use
from tests.integration.test_grpc import triton_inputs
from tests.integration.test_repository import SPEC

pytestmark = pytest.mark.integration

PASSING = GateConfig(max_regression={}, latency_p99_ms=100)


def body_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": f, "shape": [len(rows), 1], "datatype": "FP64", "data": [r[f] for r in rows]}
            for f in SPEC.feature_names
        ]
    }


def versions_seen(url: str, body: dict[str, Any], key: str, times: int = 4) -> set[str]:
    """The versions that answered ``key``'s requests, each on a new connection (both workers answer)."""
    seen = set()
    for _ in range(times):
        response = httpx.post(
            url, json=body, headers={ROUTING_HEADER: key, "connection": "close"}, timeout=10
        )
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == response.headers["x-model-version"]
        seen.add(response.headers["x-model-version"])
    return seen


def test_canary_and_shadow_under_load_on_two_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: datasets.Split
) -> None:
    grpc_port = free_port()
    settings = use(make_settings(tmp_path / "state", serve_workers=2, grpc_port=grpc_port), monkeypatch)
    champion = train_and_register(settings, split, "logistic_regression", promote_it=True, config=PASSING)
    canary = train_and_register(settings, split, "random_forest", promote_it=False, config=PASSING)
    shadow = train_and_register(settings, split, "hist_gradient_boosting", promote_it=False, config=PASSING)
    registry = gateway(settings)
    name = settings.model_name
    body = body_of(datasets.records(split.holdout.head(1), SPEC))
    poll = settings.swap_poll_s * 2 + 1.0  # every worker has polled since (and one poll more)
    service = LocalService(settings)
    try:
        start_with_grpc(service, grpc_port)  # every worker serves gRPC on the one port
        infer_url = f"{service.url}/v2/models/{name}/infer"

        load = spawn_load(infer_url, body, tmp_path / "load.jsonl", seconds=60, connections=4)
        time.sleep(2)
        traffic.set_split(
            registry, by="test", reason="canary and shadow",
            versions={CANARY: canary.version, SHADOW: shadow.version}, shares={CANARY: 25.0, SHADOW: 100.0},
        )  # fmt: skip
        time.sleep(poll)
        window = (time.time(), time.time() + 6)
        time.sleep(6)
        traffic.set_split(registry, by="test", reason="halfway", shares={CANARY: 50.0})
        time.sleep(poll)

        # one consumer, one version, on both workers, over REST and gRPC
        keys = [f"consumer-{i}" for i in range(12)]
        grpc_client = triton.InferenceServerClient(f"{settings.serve_host}:{grpc_port}")
        for key in keys:
            expected = canary.version if takes(50.0, key, CANARY) else champion.version
            assert versions_seen(infer_url, body, key) == {expected}, key
            answered = grpc_client.infer(
                name, triton_inputs([body_of_row(body)]), headers={ROUTING_HEADER: key}
            )
            assert answered.get_response().model_version == expected
        grpc_client.close()

        traffic.set_split(registry, by="test", reason="done", clear=True)
        time.sleep(poll)
        cleared = time.time()
        time.sleep(2)
        outcomes = load.finish()
    finally:
        service.stop()

    # no request failed, every answer names its version, and the shadow never answered
    assert outcomes and Counter(o["status"] for o in outcomes) == {200: len(outcomes)}
    answered = Counter(o["version"] for o in outcomes)
    assert set(answered) == {champion.version, canary.version}, answered
    during = [o for o in outcomes if window[0] <= o["started"] <= window[1]]
    on_canary = sum(o["version"] == canary.version for o in during) / len(during)
    assert 0.12 < on_canary < 0.40, (on_canary, len(during))  # 25 % of request ids, within sampling
    assert {o["version"] for o in outcomes if o["started"] > cleared} == {champion.version}

    records = list(read_records(settings.inference_log_dir))
    copies = [r for r in records if r.get("role") == SHADOW]
    answers = {r["request_id"]: r for r in records if r.get("role") != SHADOW and "error" not in r}
    assert copies and {r["version"] for r in copies} == {shadow.version}
    assert all(r["request_id"] in answers for r in copies)  # a copy of an answered request, same id
    assert all("error" not in r and len(r["outputs"]["probabilities"]) == 1 for r in copies)
    assert {r.get("role") for r in answers.values() if r["version"] == canary.version} == {CANARY}
    # the shadow copied (nearly) every request answered while it had 100 %: dropped ones are counted only
    mirrored = {r["request_id"] for r in copies}
    in_window = [o["request_id"] for o in during]
    assert sum(i in mirrored for i in in_window) >= 0.9 * len(in_window)


def body_of_row(body: dict[str, Any]) -> dict[str, Any]:
    """The one row of ``body`` as named features (what ``triton_inputs`` takes)."""
    return {tensor["name"]: tensor["data"][0] for tensor in body["inputs"]}
