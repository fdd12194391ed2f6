"""prefect.yaml's deployments point at real flows and their parameters pass the flows' own validation."""

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.tracking import PROJECT_ROOT

DEPLOYMENTS = yaml.safe_load(Path(PROJECT_ROOT, "prefect.yaml").read_text())["deployments"]
REQUIRED_AT_RUN_TIME = {
    "promote": {"version": "3", "requested_by": "ana", "reason": "checked"},
    "deploy": {"requested_by": "ana"},
    "release": {"version": "3", "requested_by": "ana", "reason": "a gradual release"},
    "rollback": {"requested_by": "ana", "reason": "bad answers reported"},
    "trace": {"request_id": "3f2a9c"},
}


def load_flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_deployment_parameters_validate(deployment: dict[str, Any]) -> None:
    flow = load_flow(deployment["entrypoint"])
    parameters = {**deployment.get("parameters", {}), **REQUIRED_AT_RUN_TIME.get(deployment["name"], {})}
    validated = flow.validate_parameters(parameters)
    assert set(parameters) <= set(validated)
    assert deployment["enforce_parameter_schema"] is True
    assert deployment["work_pool"]["name"] == "mlops-process"


def test_a_mistyped_gate_parameter_is_refused() -> None:
    flow = load_flow("flows/training.py:training_pipeline")
    with pytest.raises(Exception, match="latency_budget"):
        flow.validate_parameters({"gate_config": {"latency_budget": 3}})


def test_the_pipeline_is_scheduled() -> None:
    pipeline = next(d for d in DEPLOYMENTS if d["name"] == "training-pipeline")
    assert pipeline["schedules"][0]["cron"] == "0 3 * * *"


def test_batch_scoring_is_deployed_with_its_schedule_off_until_a_user_sets_the_paths() -> None:
    batch = next(d for d in DEPLOYMENTS if d["name"] == "batch-score")
    assert "schedules" not in batch
    assert '#   - cron: "0 4 * * *"' in Path(PROJECT_ROOT, "prefect.yaml").read_text()
