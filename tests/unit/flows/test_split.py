"""The traffic split a person sets: roles' versions and shares on a real registry, refusals, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import split as traffic
from flows.cli import main
from flows.gate import GateConfig
from flows.gateway import gateway
from flows.tracking import alias_version, connect
from models import datasets
from models.registry import CANARY, CHALLENGER, SHADOW, ModelTag
from models.traffic import Shares
from tests.conftest import make_settings, settings_env, train_and_register

PASSING = GateConfig(max_regression={}, latency_p99_ms=100)
FAILING = GateConfig(metric_floors={"roc_auc": 1.01}, max_regression={}, latency_p99_ms=100)


def test_roles_and_shares_are_set_checked_recorded_and_cleared(
    tmp_path: Path, split: datasets.Split, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path / "state")
    train_and_register(settings, split, "logistic_regression", promote_it=True)
    good = train_and_register(settings, split, "logistic_regression", promote_it=False, config=PASSING)
    bad = train_and_register(settings, split, "logistic_regression", promote_it=False, config=FAILING)
    client = connect(settings)
    client.delete_registered_model_alias(settings.model_name, CHALLENGER)
    registry = gateway(settings)
    name = settings.model_name

    def tags() -> dict[str, str]:
        return dict(client.get_registered_model(name).tags)

    refusals = [
        ({"shares": {CANARY: 5.0}}, "canary: no version has the role"),
        ({"versions": {CANARY: bad.version}, "shares": {CANARY: 5.0}}, "gate verdict 'rejected'"),
        ({"versions": {SHADOW: "99"}}, "version 99 of .* is not registered"),
        ({"versions": {CANARY: good.version}, "shares": {CANARY: 150.0}}, r"percentage in \[0, 100\]"),
    ]
    for asked, message in refusals:
        with pytest.raises(traffic.SplitRefusedError, match=message):
            traffic.set_split(registry, by="ana", reason="try", **asked)  # type: ignore[arg-type]
    assert alias_version(client, name, CANARY) is None and ModelTag.CANARY_PERCENT not in tags()

    done = traffic.set_split(
        registry, by="ana", reason="5% first", versions={CANARY: good.version}, shares={CANARY: 5.0}
    )
    assert (done.canary, done.shares, done.shadow) == (good.version, Shares(5.0, 0.0), None)
    assert alias_version(client, name, CANARY) == good.version and tags()[ModelTag.CANARY_PERCENT] == "5"
    assert tags()[ModelTag.TRAFFIC_CHANGED].endswith("by ana: 5% first")
    raised = traffic.set_split(registry, by="ana", reason="bake passed", shares={CANARY: 25.0})
    assert raised.canary == good.version and raised.shares.canary == 25.0  # the version stays

    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    assert main(["split", "--shadow-version", good.version, "--shadow", "100", "--by", "bo"]) == 0
    out = capsys.readouterr().out
    assert f"canary      v{good.version} answers 25% of requests" in out
    assert f"shadow      v{good.version} gets a copy of 100%" in out
    assert main(["split", "--canary", "-1"]) == 2
    assert "percentage in [0, 100], not -1" in capsys.readouterr().err
    assert main(["status"]) == 0
    assert "answers 25% of requests" in capsys.readouterr().out

    cleared = traffic.set_split(registry, by="bo", reason="done", clear=True)
    assert (cleared.canary, cleared.shadow, cleared.shares) == (None, None, Shares(0.0, 0.0))
    assert tags()[ModelTag.CANARY_PERCENT] == tags()[ModelTag.SHADOW_PERCENT] == "0"
