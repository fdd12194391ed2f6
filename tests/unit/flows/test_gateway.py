"""The registry gateway over a real (throwaway) MLflow store: its reads, the compare-and-set move."""

from pathlib import Path

import pytest

from flows.gateway import Registry, gateway
from flows.promote import PromotionSupersededError
from flows.tracking import connect
from models import datasets
from models.registry import CHALLENGER, CHAMPION, Tag
from tests.conftest import Registered, make_settings, train_and_register


def test_reads_the_version_behind_an_answer(champion: Registered) -> None:
    registry = gateway(champion.settings)
    version = champion.version
    assert registry.model_name == champion.settings.model_name
    assert registry.alias(CHAMPION) == version
    assert registry.alias("no-such-alias") is None
    assert registry.version(version).run_id == champion.run_id
    assert registry.tags(version)[Tag.GATE_VERDICT] == "passed"
    golden = registry.golden(version)
    assert len(golden["records"]) == len(golden["labels"]) == len(golden["probabilities"]) > 0
    assert set(registry.profile(version)["features"]) == {f.name for f in datasets.BREAST_CANCER.features}
    assert registry.holdout_metrics(version)["roc_auc"] > 0.9  # the gate's figures, unprefixed
    assert registry.experiment() == registry.experiment()


def test_one_gateway_per_run_and_store(champion: Registered, tmp_path: Path) -> None:
    assert gateway(champion.settings) is gateway(champion.settings)
    other = make_settings(tmp_path / "state")
    assert gateway(other) is not gateway(champion.settings)
    assert gateway(other).client is not connect(other)  # connect() always builds a new client


def test_move_is_compare_and_set(tmp_path: Path, split: datasets.Split) -> None:
    settings = make_settings(tmp_path / "state")
    first = train_and_register(settings, split, "logistic_regression", promote_it=True)
    second = train_and_register(settings, split, "logistic_regression", promote_it=False)
    registry = Registry(connect(settings), settings)
    with pytest.raises(PromotionSupersededError, match="another run moved it"):
        registry.move(CHAMPION, second.version, expected="99")
    assert registry.alias(CHAMPION) == first.version
    assert registry.move(CHAMPION, second.version, expected=first.version) == first.version
    assert registry.alias(CHAMPION) == second.version
    registry.set_tags(second.version, {"note": "checked"})
    assert registry.tags(second.version)["note"] == "checked"
    registry.drop(CHALLENGER)
    assert registry.alias(CHALLENGER) is None
    assert registry.history() == []  # nothing deployed yet: no version was ever live
    assert registry.experiment("deployments") != registry.experiment()
