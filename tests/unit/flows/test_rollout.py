"""Rollout against a real registry when replicas cannot be reached: the failure and the failed rollback
are both reported, loudly, and recorded; and `mlops status` shows it."""

from pathlib import Path
from typing import Any

import mlflow
import pytest

from flows import rollout
from flows.checks import DeployChecks, Replica
from flows.cli import main
from flows.processes import free_port
from flows.tracking import alias_version, connect
from models import datasets
from models.registry import CHAMPION, Tag
from tests.conftest import make_settings, train_and_register

QUICK = DeployChecks(ready_timeout_s=1, version_timeout_s=1)


def test_a_rollback_that_fails_its_checks_says_so_and_is_recorded(
    tmp_path: Path, split: datasets.Split, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path / "state")
    first = train_and_register(settings, split, "logistic_regression", promote_it=True)
    second = train_and_register(settings, split, "logistic_regression", promote_it=False)
    client = connect(settings)
    client.set_registered_model_tag(settings.model_name, rollout.HISTORY_TAG, first.version)
    nowhere = Replica(f"http://127.0.0.1:{free_port()}")  # nothing listens: every check fails

    def golden(version: str) -> dict[str, Any]:
        uri = client.get_model_version(settings.model_name, version).tags[Tag.GOLDEN_URI]
        return dict(mlflow.artifacts.load_dict(uri))

    records: list[rollout.DeploymentRecord] = []
    plan = rollout.Rollout(client, settings, [nowhere], QUICK, golden, records.append)
    with pytest.raises(rollout.DeploymentFailedError, match="ROLLBACK FAILED: v1 does not pass its checks"):
        plan.deploy(second.version, "test")
    assert [(r.action, r.passed) for r in records] == [("deploy", False), ("rollback", False)]
    assert records[0].failed_checks[0].name == "ready"
    tags = client.get_model_version(settings.model_name, second.version).tags
    assert tags[Tag.DEPLOYMENT_STATUS] == "rolled_back" and tags[Tag.DEPLOYMENT_REASON].startswith(
        "ready on "
    )
    assert alias_version(client, settings.model_name, CHAMPION) == first.version
    assert [r["result"] for r in rollout.recent(client, settings)] == ["failed", "failed"]

    for key, value in {
        "MLOPS_STATE_DIR": str(settings.state_path),
        "MLOPS_TRACKING_URI": settings.resolved_tracking_uri,
    }.items():
        monkeypatch.setenv(key, value)
    assert main(["status", "--replica", nowhere.url]) == 0
    out = capsys.readouterr().out
    assert f"champion    {first.version}" in out
    assert f"replica     {nowhere.url} not answering" in out
    assert out.count("deployment  ") == 2 and "rollback breast-cancer-classifier" in out


def test_first_deploy_failing_has_nothing_to_roll_back_to(tmp_path: Path, split: datasets.Split) -> None:
    settings = make_settings(tmp_path / "state")
    only = train_and_register(settings, split, "logistic_regression", promote_it=True)
    client = connect(settings)
    plan = rollout.Rollout(
        client, settings, [Replica(f"http://127.0.0.1:{free_port()}")], QUICK, lambda v: {}
    )
    with pytest.raises(rollout.DeploymentFailedError, match="no earlier live version to roll back to"):
        plan.deploy(only.version, "test")
