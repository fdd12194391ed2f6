"""Shared fixtures: throwaway state folders, a real MLflow store, trained models, free ports."""

from __future__ import annotations

import os
import tempfile

from tests.started_env import STARTED_ENV  # noqa: F401 - first, before anything below changes the environment

# BentoML's /metrics reads Prometheus' multiprocess folder, which `bentoml serve` sets up by itself; for
# the in-process app it must exist before prometheus_client is first imported (Prefect imports it too).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="prometheus-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # its heartbeat only adds noise

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness
from sklearn.pipeline import Pipeline

from flows import convert, evaluate, gate, promote, register, train
from flows.processes import free_port
from flows.tracking import connect, experiment_id
from models import datasets
from models.settings import Settings

# Two lanes, one per core, each run one test after another on its own pytest-xdist worker (``-n 2`` in
# pyproject.toml): most of the first lane's time is spent waiting on other processes (a fresh clone's
# install, servers starting, flow runs on a Prefect worker, a crash detected by missed heartbeats), so it
# shares the machine with the second, where the services under sustained load run one at a time. The two
# take about as long (pytest's --durations shows each test's time).
WAITING_LANE = (
    "tests/flows/test_batch.py",
    "tests/flows/test_monitor.py",
    "tests/flows/test_pipeline.py",
    "tests/flows/test_promotion.py",
    "tests/flows/test_card.py",
    "tests/integration/test_mlflow_ui.py",
    "tests/integration/test_readme_commands.py",
    "tests/integration/test_stack.py",
    "tests/integration/test_postgres.py",
    "tests/integration/test_startup_limits.py",
    "tests/integration/test_faults.py::test_a_prefect_worker_killed",
)


def lane(nodeid: str) -> str:
    return "waiting" if nodeid.startswith(WAITING_LANE) else "serving"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` with the lanes as groups. (xdist 3.8 cannot mark groups under pytest 9: it
    renames ``item._nodeid``, which pytest 9 no longer reads, so its ``xdist_group`` marks are ignored.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lane(nodeid)

    return LaneScheduling(config, log)


def make_settings(state_dir: Path, **overrides: Any) -> Settings:
    """Test settings: a fresh state folder, a free port, and a quick alias follower."""
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "serve_port": free_port(),
        "swap_poll_s": 0.5,
        **overrides,
    }
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as the environment variables a flow or a serving process reads."""
    return settings.to_env()


@pytest.fixture(scope="session")
def breast_cancer() -> pd.DataFrame:
    return datasets.load_frame(datasets.demo_source("breast_cancer"))


@pytest.fixture(scope="session")
def split(breast_cancer: pd.DataFrame) -> datasets.Split:
    return datasets.split(breast_cancer, datasets.BREAST_CANCER)


@pytest.fixture(scope="session")
def fitted(split: datasets.Split) -> Pipeline:
    return train.fit(split, "logistic_regression")


# The gate's latency check has its own tests; elsewhere a busy machine must not fail a fixture model.
RELAXED_LATENCY = gate.GateConfig(latency_p99_ms=100)


@dataclass(frozen=True)
class Registered:
    settings: Settings
    version: str
    run_id: str
    gate: gate.GateResult


def train_and_register(
    settings: Settings,
    split: datasets.Split,
    recipe: str,
    *,
    promote_it: bool,
    config: gate.GateConfig | None = None,
) -> Registered:
    """The pipeline's stages called directly, without Prefect: a real MLflow store under settings."""
    client = connect(settings)
    pipeline = train.fit(split, recipe)
    result = train.track_training(
        pipeline,
        split,
        recipe=recipe,
        experiment_id=experiment_id(client, settings),
        data_source=datasets.demo_source(split.spec.name),
        data_digest=datasets.digest(split.train),
        validation="test",
        git_commit="test",
    )
    version = register.register(client, settings.model_name, result, {"test": "true"})
    conversion = convert.convert_version(
        client,
        pipeline,
        split,
        model_name=settings.model_name,
        version=version,
        run_id=result.run_id,
        tolerance=1e-5,
    )
    champion = evaluate.score_champion(client, settings.model_name, split)
    verdict = gate.evaluate_gate(
        result.metrics, conversion, conversion.latency, champion, config or RELAXED_LATENCY
    )
    gate.record_gate(client, settings.model_name, version, verdict, champion.version if champion else None)
    if promote_it:
        promote.promote(client, settings.model_name, version, promote.Decision(True, "test", "fixture"))
    return Registered(settings=settings, version=version, run_id=result.run_id, gate=verdict)


@pytest.fixture(scope="session")
def champion(tmp_path_factory: pytest.TempPathFactory, split: datasets.Split) -> Registered:
    """A registry (session-wide, read-only for tests) whose champion is a logistic regression."""
    settings = make_settings(tmp_path_factory.mktemp("registry") / "state")
    return train_and_register(settings, split, "logistic_regression", promote_it=True)


@pytest.fixture
def serving_env(champion: Registered, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for key, value in settings_env(champion.settings).items():
        monkeypatch.setenv(key, value)
    yield champion.settings


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server for the whole session (starting one costs 10-15 s)."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def flow_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None) -> Settings:
    """Settings the flow will read from the environment: a fresh state folder and a free port."""
    settings = make_settings(tmp_path / "state")
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    return settings
