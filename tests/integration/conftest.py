"""Fixtures for tests that start real servers: a local `bentoml serve` with two workers."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.deploy import LocalService
from models.settings import Settings
from tests.conftest import make_settings, settings_env


def use(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Make ``settings`` the ones a flow (and the service it starts) reads from the environment."""
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    return settings


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None) -> Iterator[LocalService]:
    local = LocalService(use(make_settings(tmp_path / "state", serve_workers=2), monkeypatch))
    try:
        yield local
    finally:
        local.stop()
