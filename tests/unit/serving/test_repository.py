"""The model repository against a real registry: two models, their aliases, versions by path, the budget."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from flows.faults import register_broken_version
from flows.gate import GateConfig
from flows.tracking import connect
from models import datasets
from models.inference_records import read_records
from models.registry import CANARY, CHALLENGER, SHADOW, ModelTag
from models.traffic import Shares, takes
from serving.dataplane import DataPlane, ModelNotFound, VersionConflict
from serving.inference_log import InferenceLog
from serving.repository import Repository, VersionRefused, onnx_mib
from tests.conftest import Registered, make_settings, train_and_register

SPEC = datasets.BREAST_CANCER
PASSING = GateConfig(max_regression={}, latency_p99_ms=100)
FAILING = GateConfig(metric_floors={"roc_auc": 1.01}, max_regression={}, latency_p99_ms=100)


@dataclass(frozen=True)
class Store:
    first: Registered  # champion of the first model
    second: Registered  # champion of the second model
    passed: tuple[str, str]  # two versions of the first model that passed the gate, no alias
    failed: str  # a version of the first model that failed its gate
    wrong: str  # passed (its tags say), but its outputs differ from its golden rows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, split: datasets.Split) -> Store:
    settings = make_settings(tmp_path_factory.mktemp("repository") / "state")
    first = train_and_register(settings, split, "logistic_regression", promote_it=True)
    one = train_and_register(settings, split, "random_forest", promote_it=False, config=PASSING)
    two = train_and_register(settings, split, "logistic_regression", promote_it=False, config=PASSING)
    failed = train_and_register(settings, split, "logistic_regression", promote_it=False, config=FAILING)
    wrong = register_broken_version(connect(settings), settings, first.version, "wrong_outputs")
    other = settings.model_copy(update={"model_name": "second-classifier"})
    second = train_and_register(other, split, "logistic_regression", promote_it=True)
    assert one.gate.verdict == two.gate.verdict == "passed" and failed.gate.verdict == "rejected"
    client = connect(settings)
    for name in (settings.model_name, other.model_name):  # the gate names its last pass challenger
        client.delete_registered_model_alias(name, CHALLENGER)
    return Store(first, second, (one.version, two.version), failed.version, wrong)


Events = list[tuple[str, str]]


def repository(store: Store, tmp_path: Path, budget_mib: float = 512.0) -> tuple[Repository, Events]:
    """Both models, and the events its followers and the budget report."""
    settings = store.first.settings
    names = (settings.model_name, store.second.settings.model_name)
    events: Events = []
    made = Repository(
        settings.resolved_tracking_uri,
        names,
        tmp_path / "cache",
        poll_s=60,
        budget_mib=budget_mib,
        on_event=lambda kind, detail: events.append((kind, detail)),
    )
    return made, events


def test_every_models_champion_is_loaded_and_the_worker_is_ready_only_then(
    store: Store, tmp_path: Path
) -> None:
    repo, events = repository(store, tmp_path)
    assert not repo.ready
    assert repo.check() and repo.ready
    first, second = store.first.settings.model_name, store.second.settings.model_name
    assert [(e.name, e.version, e.reasons) for e in repo.index()] == [
        (first, store.first.version, ("alias champion",)),
        (second, store.second.version, ("alias champion",)),
    ]
    assert repo.default.name == first
    assert not repo.check()  # nothing moved: nothing loaded again
    assert not any(kind == "registry_error" for kind, _ in events)


def test_every_model_with_a_champion_is_served_when_the_names_say_so(store: Store, tmp_path: Path) -> None:
    settings = store.first.settings
    first, second = settings.model_name, store.second.settings.model_name
    served = settings.model_copy(update={"serve_models": ["*"]}).served_models
    assert served == (first, "*")  # the default model first, then every model that has a champion
    events: Events = []
    repo = Repository(
        settings.resolved_tracking_uri,
        served,
        tmp_path / "cache",
        poll_s=60,
        on_event=lambda kind, detail: events.append((kind, detail)),
    )
    assert list(repo.models) == [first] and list(repo.names) == [first]
    assert repo.check() and repo.ready
    assert list(repo.models) == [first, second] and list(repo.names) == [first, second]
    assert ("discovered", second) in events and repo.default.name == first
    assert [e.name for e in repo.index()] == [first, second]
    assert not repo.check()  # found once
    with pytest.raises(ValueError, match="by name"):
        Repository(settings.resolved_tracking_uri, ("*",), tmp_path / "none", poll_s=60)


def test_a_gated_version_is_loaded_by_path_on_first_use_and_others_are_refused(
    store: Store, tmp_path: Path
) -> None:
    repo, _ = repository(store, tmp_path)
    repo.check()
    name = store.first.settings.model_name
    version = store.passed[0]
    assert repo.held(name, version) is None
    loaded = repo.load_version(name, version)
    assert loaded.ref.version == version and repo.held(name, version) is loaded
    assert repo.load_version(name, version) is loaded  # once
    assert ("pinned by path",) in [e.reasons for e in repo.index() if e.version == version]
    assert repo.models[name].versions() == [store.first.version, version]

    refusals = {
        "999": (404, "is not registered"),
        store.failed: (409, "gate verdict 'rejected'"),
        store.wrong: (409, "failed to load: SelfTestError"),
    }
    for asked, (status, words) in refusals.items():
        with pytest.raises(VersionRefused, match=words) as refused:
            repo.load_version(name, asked)
        assert refused.value.status == status
        assert repo.held(name, asked) is None


def test_pinned_versions_stay_under_the_budget_least_recently_used_first(
    store: Store, tmp_path: Path
) -> None:
    name = store.first.settings.model_name
    probe, _ = repository(store, tmp_path / "probe")
    sizes = [onnx_mib(probe.load_version(name, v), tmp_path / "probe" / "cache") for v in store.passed]
    repo, events = repository(store, tmp_path, budget_mib=max(sizes) * 1.01)  # room for one of them
    repo.check()
    one, two = store.passed
    repo.load_version(name, one)
    repo.load_version(name, two)
    assert repo.held(name, one) is None and repo.held(name, two) is not None
    assert ("unpinned", f"{name} v{one}") in events
    assert repo.models[name].champion is not None  # the champion is never let go


def test_an_optional_alias_is_followed_and_let_go_when_removed(store: Store, tmp_path: Path) -> None:
    repo, events = repository(store, tmp_path)
    repo.check()
    settings = store.first.settings
    client = connect(settings)
    version = store.passed[1]
    client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
    try:
        assert repo.check()
        served = repo.models[settings.model_name]
        assert served.by_alias()[CHALLENGER].ref.version == version
        assert served.versions() == [store.first.version, version]
        assert [e.reasons for e in repo.index() if e.version == version] == [("alias challenger",)]
    finally:
        client.delete_registered_model_alias(settings.model_name, CHALLENGER)
    assert repo.check()
    assert CHALLENGER not in repo.models[settings.model_name].by_alias()
    assert ("unloaded", f"v{version}: the alias is gone") in events
    assert not any(kind == "registry_error" for kind, _ in events)


def test_the_data_plane_answers_each_model_and_version_with_its_own_provenance(
    store: Store, split: datasets.Split, tmp_path: Path
) -> None:
    from tests.unit.serving.test_dataplane import infer_body

    repo, _ = repository(store, tmp_path)
    repo.check()
    plane = DataPlane(repo, InferenceLog(tmp_path / "log", worker="test"))
    first, second = store.first.settings.model_name, store.second.settings.model_name
    rows = datasets.records(split.holdout.head(2), SPEC)
    try:
        answers = [
            asyncio.run(plane.infer(first, None, infer_body(rows), None, probe=False)),
            asyncio.run(plane.infer(second, None, infer_body(rows), None, probe=False)),
            asyncio.run(plane.infer(first, store.passed[0], infer_body(rows), None, probe=False)),
        ]
        assert [(a.model.ref.name, a.provenance["model_version"]) for a in answers] == [
            (first, store.first.version),
            (second, store.second.version),
            (first, store.passed[0]),
        ]
        metadata = asyncio.run(plane.model_metadata(first))
        assert metadata["versions"] == [store.first.version, store.passed[0]]
        assert asyncio.run(plane.model_metadata(first, store.passed[0]))["versions"][0] == store.passed[0]
        with pytest.raises(VersionConflict, match="gate verdict 'rejected'"):
            asyncio.run(plane.infer(first, store.failed, infer_body(rows), None, probe=False))
        with pytest.raises(ModelNotFound, match="'third' is not served here"):
            plane.model("third")
        records = list(read_records(tmp_path / "log"))
        assert [(r["model"], r["version"]) for r in records] == [
            (a.model.ref.name, a.model.ref.version) for a in answers
        ]
        index = plane.repository_index()
        assert {
            "name": first,
            "version": store.passed[0],
            "state": "READY",
            "reason": "pinned by path",
        } in index
    finally:
        plane.close()


def test_a_version_two_aliases_name_is_loaded_once(store: Store, tmp_path: Path) -> None:
    repo, _ = repository(store, tmp_path)
    settings = store.first.settings
    client = connect(settings)
    client.set_registered_model_alias(settings.model_name, CHALLENGER, store.first.version)
    try:
        repo.check()
    finally:
        client.delete_registered_model_alias(settings.model_name, CHALLENGER)
    by_alias = repo.models[settings.model_name].by_alias()
    assert by_alias[CHALLENGER] is by_alias["champion"]


def test_a_refused_version_is_answered_from_memory_and_a_non_number_without_a_registry_read(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import model as model_module
    from serving import repository as repository_module

    repo, _ = repository(store, tmp_path)
    repo.check()
    name = store.first.settings.model_name
    reads: list[str] = []
    real = model_module.resolve_version

    def counted(uri: str, model: str, version: str) -> Any:
        reads.append(version)
        return real(uri, model, version)

    monkeypatch.setattr(repository_module, "resolve_version", counted)
    for _ in range(3):
        with pytest.raises(VersionRefused, match="is not registered"):
            repo.load_version(name, "998")
        with pytest.raises(VersionRefused, match="'x1' is not a version number"):
            repo.load_version(name, "x1")
    assert reads == ["998"]
    monkeypatch.setattr(repository_module, "REFUSAL_TTL_S", 0.0)
    with pytest.raises(VersionRefused):
        repo.load_version(name, "998")
    assert reads == ["998", "998"]  # once its time is up, the registry is asked again


def test_the_canary_answers_its_share_by_key_and_the_shadow_gets_copies_it_never_answers(
    store: Store, split: datasets.Split, tmp_path: Path
) -> None:
    from tests.unit.serving.test_dataplane import infer_body

    settings = store.first.settings
    name, champion = settings.model_name, store.first.version
    canary, shadow = store.passed
    client = connect(settings)
    client.set_registered_model_alias(name, CANARY, canary)
    client.set_registered_model_alias(name, SHADOW, shadow)
    client.set_registered_model_tag(name, ModelTag.CANARY_PERCENT, "50")
    client.set_registered_model_tag(name, ModelTag.SHADOW_PERCENT, "100")
    repo, events = repository(store, tmp_path)
    plane = DataPlane(repo, InferenceLog(tmp_path / "log", worker="test"))
    body = infer_body(datasets.records(split.holdout.head(3), SPEC))
    predict_body = orjson.dumps({"records": datasets.records(split.holdout.head(2), SPEC)})
    keys = [f"consumer-{i}" for i in range(40)]
    try:
        repo.check()
        assert repo.models[name].shares == Shares(50.0, 100.0)
        assert ("shares", f"{name} canary=50% shadow=100%") in events

        def infer(key: str | None, request_id: str) -> str:
            answer = asyncio.run(plane.infer(name, None, body, None, False, request_id, key))
            return answer.model.ref.version

        answered = {key: infer(key, f"{key}-a") for key in keys}
        expected = {key: canary if takes(50.0, key, CANARY) else champion for key in keys}
        assert answered == expected and set(answered.values()) == {champion, canary}
        assert all(infer(key, f"{key}-b") == answered[key] for key in keys)  # one consumer, one version
        predicted = asyncio.run(plane.predict(predict_body, False, "p-1", key=keys[0]))[0]
        assert predicted.model.ref.version == answered[keys[0]]
        assert infer(None, "unsplit") == champion  # a probe, or a version by path: not split
        assert asyncio.run(plane.infer(name, shadow, body, None, False, "pinned")).model.ref.version == shadow

        client.set_registered_model_tag(name, ModelTag.CANARY_PERCENT, "0")  # a change of share: one poll
        assert repo.check() and repo.models[name].shares == Shares(0.0, 100.0)
        assert {infer(key, f"{key}-c") for key in keys} == {champion}
    finally:
        plane.close()  # waits for the shadow's copies
        for alias in (CANARY, SHADOW):
            client.delete_registered_model_alias(name, alias)
        for tag in (ModelTag.CANARY_PERCENT, ModelTag.SHADOW_PERCENT):
            client.delete_registered_model_tag(name, tag)

    records = list(read_records(tmp_path / "log"))
    copies = [r for r in records if r.get("role") == SHADOW]
    answers = [r for r in records if r.get("role") != SHADOW]
    # every split request answered once, and copied once to the shadow under the same request id
    split_ids = {r["request_id"] for r in answers} - {"unsplit", "pinned"}
    assert sorted(r["request_id"] for r in copies) == sorted(split_ids)
    assert {(r["version"], r["route"]) for r in copies} == {(shadow, "infer"), (shadow, "predict")}
    assert all(len(r["outputs"]["probabilities"]) == r["rows"] for r in copies)
    assert shadow not in {r["version"] for r in answers if r["request_id"] != "pinned"}
    roles = {(r["version"], r.get("role")) for r in answers}
    assert roles == {(champion, None), (canary, CANARY), (shadow, None)}  # the pinned one has no role
