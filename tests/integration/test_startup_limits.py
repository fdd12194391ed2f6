"""Start-up limits are ours, and their errors say what timed out, how long it waited and which setting.

``mlops demo`` as a user runs it (a child process, no harness), its temporary Prefect server kept from ever
answering (its database is a socket that accepts connections and never replies) and a limit of 1 s: it
fails with that message, and the model service it started beside the pipeline is stopped again. (A limit
alone is not enough: the wait starts after the flows are imported, by when an idle machine's server is up.)
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from flows.deploy import LocalService
from flows.processes import free_port
from flows.tracking import PROJECT_ROOT
from tests.conftest import make_settings, settings_env
from tests.integration.newcomer import listening_ports

pytestmark = pytest.mark.integration


def test_a_demo_past_its_prefect_limit_names_the_setting_and_leaves_nothing_running(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", serve_port=free_port(), prefect_start_timeout_s=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLOPS_"))}
    env |= settings_env(settings) | {"MLOPS_PREFECT_START_TIMEOUT_S": "1"}
    with socket.create_server(("127.0.0.1", 0)) as never_answers:
        database = f"postgresql+asyncpg://postgres@127.0.0.1:{never_answers.getsockname()[1]}/prefect"
        env |= {
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database,
            "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "300",
        }
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", "demo"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    try:
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        error = done.stderr
        assert "» demo: the temporary Prefect server" in error, error[-3000:]
        assert "did not answer within 1s" in error and "MLOPS_PREFECT_START_TIMEOUT_S" in error, error[-3000:]
        assert not (settings.state_path / "serve.pid").exists()
        assert settings.serve_port not in listening_ports()
        leftover = [
            p.info["cmdline"]
            for p in psutil.process_iter(["cmdline"])
            if str(settings.state_path) in " ".join(p.info["cmdline"] or [])
            or f"--port {settings.serve_port}" in " ".join(p.info["cmdline"] or [])
        ]
        assert leftover == []
    finally:  # a failed check leaves nothing running for the next test either
        LocalService(settings).stop()
