"""The temporary Prefect server ``mlops`` runs its flows on when no Prefect server is configured.

Left to itself, Prefect starts one on the first API call (its "ephemeral" server) and gives it 20 s
(``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``): on a new database (about 10 s of migrations here), a
busy machine, or a venv without bytecode, it misses that and the flow fails with "Timed out while attempting
to connect to ephemeral Prefect API server". This one is the same application (``create_app`` with its
services and UI off), started as the command's first step so that it migrates its database while the
command imports the flows, with a limit chosen on purpose (``MLOPS_PREFECT_START_TIMEOUT_S``) and an error
that names it. Its database is the state folder's (``PREFECT_HOME``); it stops when the command ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flows.processes import free_port, supervised, wait_http
from models.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

# The server's own settings: no UI, no analytics, no block types (these flows use none; registering them
# costs 5 s on a new database).
SERVER_ENV = {
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
}


def app() -> FastAPI:
    """The uvicorn factory: Prefect's API without its background services, as its own temporary server."""
    from prefect.server.api.server import create_app

    return create_app(ephemeral=True, final=True)


@dataclass
class TemporaryServer:
    process: subprocess.Popen[bytes]
    api_url: str
    log_file: Path
    timeout_s: float

    def wait_ready(self) -> float:
        """Until the API answers; the seconds it took. A miss names ``MLOPS_PREFECT_START_TIMEOUT_S``."""
        return wait_http(
            f"{self.api_url}/health",
            self.timeout_s,
            exited=lambda: self.process.poll() is not None,
            what=f"the temporary Prefect server ({self.api_url}, pid {self.process.pid})",
            setting=f"MLOPS_PREFECT_START_TIMEOUT_S={self.timeout_s:g}",
            log_file=self.log_file,
        )


def command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--lifespan", "on",
    ]  # fmt: skip


@contextmanager
def temporary_server(settings: Settings) -> Iterator[TemporaryServer]:
    """Start the server now and point this process's Prefect client at it (call before Prefect is imported).

    The caller waits for it with ``wait_ready`` once it needs the API; on exit the server is stopped.
    """
    port = free_port()
    log_file = settings.state_path / "logs" / "prefect-temporary-server.log"
    with supervised(command(port), log_file, SERVER_ENV, stop_timeout_s=10) as process:
        server = TemporaryServer(
            process, f"http://127.0.0.1:{port}/api", log_file, settings.prefect_start_timeout_s
        )
        os.environ["PREFECT_API_URL"] = server.api_url
        try:
            yield server
        finally:
            drain_to_server()  # while the server still runs
            os.environ.pop("PREFECT_API_URL", None)


def drain_to_server(timeout_s: float = 10) -> None:
    """Send the logs and events this process still holds while the server can take them.

    Prefect's client sends both from background workers that it drains only at interpreter exit; with the
    server stopped by then, the log worker retries for over a minute and prints "Error logging to API".
    """
    if "prefect" not in sys.modules:  # the command failed before any flow ran
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)
