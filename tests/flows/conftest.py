from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from models.settings import Settings
from tests.conftest import make_settings, settings_env


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
