"""Deploys, injected faults and automated rollback under steady load; a fleet of three replicas."""

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from flows import rollout
from flows.checks import DeployChecks
from flows.deploy import LocalService, served_version
from flows.faults import FaultKind, register_broken_version
from flows.gate import GateConfig
from flows.release import deploy_flow, promote_flow, rollback_flow
from flows.tracking import alias_version, connect
from flows.training import training_pipeline
from models import datasets
from models.registry import CHAMPION, MODEL_CARD_ARTIFACT, Tag
from models.settings import Settings
from tests.conftest import make_settings
from tests.integration.conftest import use
from tests.integration.load import finish_load, start_load

pytestmark = pytest.mark.integration

ANY_CHAMPION = GateConfig(max_regression={}, latency_p99_ms=50)  # the load shares the two cores
FAST = DeployChecks(
    ready_timeout_s=60,
    version_timeout_s=20,
    probe_requests=10,
    probe_concurrency=2,
    latency_p99_ms=1000,
    bake_s=2,
    bake_p99_ms=2000,
)
# Under steady load on two cores a healthy model's p99 can reach a few hundred ms, so the latency budget
# is 1 s and the slow fault is made 4x slower than its default (about 0.7 s per call idle).
SLOW_LAYERS = 1300
# The slow version loads and self-tests slowly too (seconds per golden row under load): it gets time to
# report its version, so that what catches it is the latency check it is meant to fail.
CHECKS: dict[FaultKind, DeployChecks] = {
    "unloadable": FAST,
    "wrong_outputs": FAST,
    # 90 s was once not enough under load for the second worker to load and self-test it (CI, 2026-12-03)
    "slow": FAST.model_copy(update={"version_timeout_s": 180}),
}
EXPECTED_CATCH: dict[FaultKind, str] = {
    "unloadable": "version",
    "wrong_outputs": "version",
    "slow": "latency",
}


def test_every_fault_is_rolled_back_under_load_with_no_failed_request(
    service: LocalService, split: datasets.Split, tmp_path: Path
) -> None:
    settings = service.settings
    client = connect(settings)
    assert training_pipeline(gate_config=ANY_CHAMPION, deploy_checks=FAST).version == "1"
    record = datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)[0]
    out, stop = tmp_path / "load.jsonl", tmp_path / "stop"
    # a steady 100 req/s (open loop): requests in flight through every swap, the flows not starved of CPU
    load = start_load(
        f"{service.url}/predict",
        {"records": [record]},
        out,
        seconds=300,
        connections=4,
        stop_file=str(stop),
        rate="100",
    )
    try:
        time.sleep(2)
        good = training_pipeline(
            recipe="hist_gradient_boosting", gate_config=ANY_CHAMPION, deploy_checks=FAST
        )
        assert good.version == "2"  # a good deploy under load
        assert client.get_model_version(settings.model_name, "2").tags[Tag.DEPLOYMENT_STATUS] == "live"

        report: dict[str, dict[str, Any]] = {}
        for kind, check in EXPECTED_CATCH.items():
            broken = register_broken_version(client, settings, "2", kind, slow_layers=SLOW_LAYERS)
            with pytest.raises(rollout.DeploymentFailedError, match="rolled back to v2") as failure:
                promote_flow(version=broken, requested_by="drill", reason=kind, deploy_checks=CHECKS[kind])
            assert alias_version(client, settings.model_name, CHAMPION) == "2"
            tags = client.get_model_version(settings.model_name, broken).tags
            assert tags[Tag.DEPLOYMENT_STATUS] == "rolled_back"
            # Under this load the slow version may not even report itself in time (seen in CI on
            # 2026-12-03: neither worker named it within 180 s): then the version check refuses it.
            caught = ("latency", "version") if kind == "slow" else (check,)
            assert tags[Tag.DEPLOYMENT_REASON].startswith(tuple(f"{c} on " for c in caught))
            last = rollout.recent(client, settings, limit=1)[0]
            assert (last["action"], last["to_version"], last["result"]) == ("rollback", "2", "passed")
            report[kind] = {
                "caught_by": check,
                "restore_s": float(last["restore_s"]),
                "message": str(failure.value),
            }
            assert served_version(service.url, settings.model_name) == "2"
    finally:
        stop.touch()
        outcomes = finish_load(load, out)
    statuses = Counter(o["status"] for o in outcomes)
    assert statuses == {200: len(outcomes)}, statuses
    assert {o["version"] for o in outcomes} <= {"1", "2", *[str(v) for v in range(3, 6)]}
    print("\nfault drill:", json.dumps({**report, "requests": len(outcomes), "failed": 0}, indent=2))
    assert all(entry["restore_s"] < 10 for entry in report.values()), report


def model_card(client: MlflowClient, settings: Settings, version: str) -> str:
    run_id = client.get_model_version(settings.model_name, version).tags[Tag.RUN_ID]
    return Path(client.download_artifacts(run_id, MODEL_CARD_ARTIFACT)).read_text()


def test_manual_rollback_to_the_previous_or_a_named_version(service: LocalService) -> None:
    settings = service.settings
    client = connect(settings)
    training_pipeline(gate_config=ANY_CHAMPION, deploy_checks=FAST)
    training_pipeline(recipe="random_forest", gate_config=ANY_CHAMPION, deploy_checks=FAST)
    summary = rollback_flow(requested_by="ana", reason="customer report", deploy_checks=FAST)
    assert "rollback" in summary and "v2 -> v1" in summary and "ana" in summary
    assert served_version(service.url, settings.model_name) == "1"
    assert alias_version(client, settings.model_name, CHAMPION) == "1"
    back, away = model_card(client, settings, "1"), model_card(client, settings, "2")  # both regenerated
    assert "after a rollback (rollback by ana: customer report)" in back and "- deployment: live" in back
    assert "| rollback | rollback v2 -> v1 by rollback by ana: customer report: passed |" in back
    assert "| champion moved away | rollback v2 -> v1 by rollback by ana" in away
    assert "| deploy | deploy v1 -> v2 by pipeline: passed |" in away and "- deployment: retired" in away
    rollback_flow(requested_by="ana", reason="fixed", to_version="2", deploy_checks=FAST)
    assert served_version(service.url, settings.model_name) == "2"
    assert rollout.history(client, settings.model_name) == ["1", "2", "1", "2"]
    deploys = [r["action"] for r in rollout.recent(client, settings, limit=10)]
    assert deploys == ["rollback", "rollback", "deploy", "deploy"]


def test_a_fleet_of_three_replicas_converges_on_deploy_and_on_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None
) -> None:
    main = use(make_settings(tmp_path / "main"), monkeypatch)
    replicas = [
        LocalService(make_settings(tmp_path / f"replica{i}", tracking_uri=main.resolved_tracking_uri))
        for i in range(3)
    ]
    urls = [r.url for r in replicas]
    try:
        assert training_pipeline(deploy_target="none").version == "1"
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready(120)
        assert "passed" in deploy_flow(
            requested_by="ci", deploy_target="fleet", replica_urls=urls, deploy_checks=FAST
        )
        second = training_pipeline(
            recipe="hist_gradient_boosting",
            gate_config=ANY_CHAMPION,
            deploy_target="fleet",
            replica_urls=urls,
            deploy_checks=FAST,
        )
        assert second.version == "2"
        assert [served_version(url, main.model_name) for url in urls] == ["2", "2", "2"]
        client = connect(main)
        broken = register_broken_version(client, main, "2", "unloadable")
        with pytest.raises(rollout.DeploymentFailedError, match="rolled back to v2"):
            promote_flow(
                version=broken,
                requested_by="drill",
                reason="fleet",
                deploy_target="fleet",
                replica_urls=urls,
                deploy_checks=FAST,
            )
        assert [served_version(url, main.model_name) for url in urls] == ["2", "2", "2"]
        rollback = rollout.recent(client, main, limit=1)[0]
        assert rollback["action"] == "rollback" and rollback["result"] == "passed"
    finally:
        for replica in replicas:
            replica.stop()
