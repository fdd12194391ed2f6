"""The alias follower against a real registry: swap, refuse a broken version, survive the registry."""

from pathlib import Path

import pytest

from flows.faults import register_broken_version
from flows.gate import GateConfig
from flows.promote import Decision, promote
from flows.tracking import connect
from models import datasets
from models.registry import CHAMPION
from serving.follower import Follower, SelfTestError, self_test
from serving.model import fetch_golden, load_alias, resolve
from tests.conftest import Registered, make_settings, train_and_register


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, split: datasets.Split) -> Registered:
    settings = make_settings(tmp_path_factory.mktemp("follow") / "state")
    return train_and_register(settings, split, "logistic_regression", promote_it=True)


def follower(registry: Registered, tmp_path: Path, events: list[tuple[str, str]]) -> Follower:
    settings = registry.settings
    return Follower(
        tracking_uri=settings.resolved_tracking_uri,
        model_name=settings.model_name,
        cache_dir=tmp_path / "cache",
        poll_s=0.05,
        on_event=lambda kind, detail: events.append((kind, detail)),
    )


def test_loads_the_champion_and_swaps_when_the_alias_moves(
    registry: Registered, split: datasets.Split, tmp_path: Path
) -> None:
    events: list[tuple[str, str]] = []
    follow = follower(registry, tmp_path, events)
    assert not follow.ready
    assert follow.check() and follow.ready
    assert follow.current is not None and follow.current.ref.version == registry.version
    assert not follow.check()  # same version: nothing to do

    settings = registry.settings
    second = train_and_register(
        settings,
        split,
        "random_forest",
        promote_it=True,
        config=GateConfig(max_regression={}, latency_p99_ms=100),
    )
    old = follow.current
    assert follow.check()
    assert follow.current.ref.version == second.version
    assert old.ref.version == registry.version  # a request holding the old model still has a whole one
    assert events[-1] == ("swapped", f"v{registry.version} -> v{second.version}")
    promote(connect(settings), settings.model_name, registry.version, Decision(True, "test", "back"))


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(
    registry: Registered, tmp_path: Path
) -> None:
    settings = registry.settings
    client = connect(settings)
    events: list[tuple[str, str]] = []
    follow = follower(registry, tmp_path, events)
    follow.check()
    serving = follow.current
    assert serving is not None
    broken = register_broken_version(client, settings, serving.ref.version, "unloadable")
    client.set_registered_model_alias(settings.model_name, CHAMPION, broken)
    try:
        assert not follow.check()
        assert follow.current is serving and follow.ready
        assert events[-1][0] == "swap_failed" and f"v{broken}" in events[-1][1]
        assert follow.stats.failures == 1
        assert not follow.check()  # remembered: not retried until the alias moves again
        assert follow.stats.failures == 1
    finally:
        client.set_registered_model_alias(settings.model_name, CHAMPION, serving.ref.version)


def test_registry_unreachable_keeps_serving(registry: Registered, tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    follow = follower(registry, tmp_path, events)
    follow.check()
    serving = follow.current
    follow.tracking_uri = f"sqlite:///{tmp_path}/missing/nowhere.db"
    assert not follow.check()
    assert follow.current is serving
    assert follow.stats.registry_errors == 1 and events[-1][0] == "registry_error"


def test_background_thread_follows_until_stopped(registry: Registered, tmp_path: Path) -> None:
    follow = follower(registry, tmp_path, [])
    follow.start()
    try:
        assert follow.ready
    finally:
        follow.stop()
    assert follow._thread is not None and not follow._thread.is_alive()


def test_self_test_catches_outputs_that_differ_from_the_golden(registry: Registered, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    model = load_alias(
        registry.settings.resolved_tracking_uri, registry.settings.model_name, settings.model_cache_dir
    )
    golden = fetch_golden(
        resolve(registry.settings.resolved_tracking_uri, registry.settings.model_name), tmp_path
    )
    self_test(model, golden)
    with pytest.raises(SelfTestError, match="labels"):
        self_test(model, {**golden, "labels": [1 - v for v in golden["labels"]]})
    shifted = [[p + 0.01 for p in row] for row in golden["probabilities"]]
    with pytest.raises(SelfTestError, match=r"differ from the golden ones by 0\.01"):
        self_test(model, {**golden, "probabilities": shifted})
