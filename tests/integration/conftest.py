"""Fixtures for tests that start real servers: a local `bentoml serve` with two workers."""

import subprocess
import time
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


def tls_pair(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def listening_sockets(port: int) -> int:
    """Sockets in LISTEN state on ``port`` (from /proc/net/tcp and tcp6: local address, state 0A; gRPC
    listens on 127.0.0.1 through an IPv6 socket)."""
    rows = [
        row for table in ("tcp", "tcp6") for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]
    ]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A")


def start_with_grpc(service: LocalService, grpc_port: int, workers: int = 2) -> None:
    """Start the service and wait until it is ready and every worker listens on the gRPC port."""
    settings = service.settings
    service.start()
    service.wait_ready(settings.serve_start_timeout_s)
    deadline = time.monotonic() + settings.serve_start_timeout_s
    while listening_sockets(grpc_port) < workers and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listening_sockets(grpc_port) == workers, f"{workers} workers should listen on :{grpc_port}"


@pytest.fixture(scope="session")
def newcomer_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh clone of the committed tree for the README's commands; its first ``make`` installs it."""
    from tests.integration.newcomer import clone

    return clone(tmp_path_factory.mktemp("newcomer") / "mlops-path")
