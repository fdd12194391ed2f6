"""`mlops trace` on real servers: requests answered before a promotion, after it and after a rollback each
trace to the version that answered them and the deployment that put it in front of them, with its run,
data, validation, gate and promotion; a monitoring window and a feedback label show up; an unknown id is
said to be unknown."""

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from flows import trace
from flows.deploy import LocalService
from flows.monitoring import monitor_flow
from flows.release import rollback_flow
from flows.tracking import connect
from flows.training import training_pipeline
from models import datasets
from tests.integration.test_rollout import ANY_CHAMPION, FAST

pytestmark = pytest.mark.integration


def mlops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def ask(service: LocalService, record: Mapping[str, object]) -> tuple[str, str]:
    response = httpx.post(f"{service.url}/predict", json={"records": [record]}, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"], response.headers["x-model-version"]


def test_each_answer_traces_to_its_version_and_the_deployment_that_served_it(
    service: LocalService, split: datasets.Split, tmp_path: Path
) -> None:
    settings = service.settings
    client = connect(settings)
    record = datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)[0]
    assert training_pipeline(gate_config=ANY_CHAMPION, deploy_checks=FAST).version == "1"
    first = ask(service, record)
    assert (
        training_pipeline(recipe="random_forest", gate_config=ANY_CHAMPION, deploy_checks=FAST).version == "2"
    )
    second = ask(service, record)
    rollback_flow(requested_by="ana", reason="customer report", deploy_checks=FAST)
    third = ask(service, record)
    assert [first[1], second[1], third[1]] == ["1", "2", "1"]
    label = httpx.post(f"{service.url}/v2/models/{settings.model_name}/feedback", timeout=30,
                       json={"labels": [{"request_id": third[0], "label": 1}]})  # fmt: skip
    assert label.status_code == 200, label.text
    monitor_flow(window_minutes=60)  # the champion, v1
    monitor_flow(version="2", window_minutes=60)

    expected = {first[0]: ("1", "deploy"), second[0]: ("2", "deploy"), third[0]: ("1", "rollback")}
    for request_id, (version, action) in expected.items():
        found = trace.collect(settings, request_id, client)
        assert found.found and found.answer["version"] == version
        served = [d for d in found.deployments if d.get("served_this_request")]
        assert len(served) == 1 and served[0]["action"] == action, found.deployments
        assert found.run["run_id"] == found.answer["run_id"]
        assert found.data["digest"] == datasets.digest(
            datasets.load_frame(datasets.demo_source("breast_cancer"))
        )
        assert set(found.data["splits"]) == {"training", "holdout"}
        assert found.validation["passed"] and len(found.validation["outcomes"]) > 10
        assert found.gate["verdict"] == "passed" and found.gate["checks"]
        assert found.promotion["decision"] and found.promotion["by"]
        assert found.monitoring and found.monitoring[0]["verdict"] in {"ok", "breach"}

    text = mlops("trace", third[0])
    assert text.returncode == 0, text.stderr
    assert f"request {third[0]}" in text.stdout and "v1" in text.stdout
    assert "rollback" in text.stdout and "<- in front of this request" in text.stdout
    assert "feedback  row 0: label 1" in text.stdout
    as_json = json.loads(mlops("trace", third[0], "--json").stdout)
    assert as_json["answer"]["version"] == "1" and as_json["feedback"][0]["label"] == 1
    unknown = mlops("trace", "never-answered")
    assert unknown.returncode == 1 and "not answered here" in unknown.stdout
    print("\n" + text.stdout)
    (tmp_path / "trace.txt").write_text(text.stdout)
