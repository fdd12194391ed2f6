"""The local serving process that the project starts and supervises itself (its state in the state folder)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flows.checks import Replica
from flows.processes import alive, log_tail, spawn, stop_group, wait_http
from flows.tracking import PROJECT_ROOT
from models.settings import Settings

SERVICE_TARGET = "serving.service:ModelService"


@dataclass(frozen=True)
class LocalService:
    """A ``bentoml serve`` process on loopback, its pid and log under the state folder."""

    settings: Settings

    @property
    def pid_file(self) -> Path:
        return self.settings.state_path / "serve.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.state_path / "logs" / "serve.log"

    @property
    def url(self) -> str:
        return self.settings.serve_url

    @property
    def verify(self) -> bool | str:
        """TLS verification for our own calls: the configured certificate is its own authority."""
        return str(self.settings.tls_certfile) if self.settings.tls_certfile else True

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if alive(pid) else None

    def environment(self) -> dict[str, str]:
        state = self.settings.state_path
        return {
            **os.environ,
            **self.settings.to_env(),  # the workers read these settings, whatever this process's environment
            "MLOPS_STATE_DIR": str(state),
            "MLOPS_TRACKING_URI": self.settings.resolved_tracking_uri,
            "MLOPS_MODEL_NAME": self.settings.model_name,
            "BENTOML_HOME": str(state / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "BENTOML_CONFIG_OPTIONS": f"services.mlops_model.workers={self.settings.serve_workers}",
        }

    def command(self) -> list[str]:
        bentoml = Path(sys.executable).with_name("bentoml")
        command = [
            str(bentoml), "serve", SERVICE_TARGET, "--working-dir", str(PROJECT_ROOT),
            "--host", self.settings.serve_host, "--port", str(self.settings.serve_port),
        ]  # fmt: skip
        if self.settings.tls_certfile and self.settings.tls_keyfile:
            command += [
                "--ssl-certfile",
                str(self.settings.tls_certfile),
                "--ssl-keyfile",
                str(self.settings.tls_keyfile),
            ]
        return command

    def start(self) -> int:
        if (pid := self.pid()) is not None:
            return pid
        process = spawn(self.command(), self.log_file, self.environment(), PROJECT_ROOT)
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop the process group; return whether something was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        stop_group(pid, timeout_s)
        return True

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_file, lines)

    def wait_ready(self, timeout_s: float | None = None) -> float:
        """Until ``/readyz`` answers 200 (a model loaded and self-tested); the seconds it took.

        The limit is ``MLOPS_SERVE_START_TIMEOUT_S`` unless the caller gives its own.
        """
        limit = timeout_s if timeout_s is not None else self.settings.serve_start_timeout_s
        return wait_http(
            f"{self.url}/readyz",
            limit,
            exited=lambda: self.pid() is None,
            what=f"the model service ({' '.join(self.command()[:3])}, pid {self.pid()})",
            setting=f"MLOPS_SERVE_START_TIMEOUT_S={limit:g}" if timeout_s is None else f"timeout_s={limit:g}",
            log_file=self.log_file,
            verify=self.verify,
        )


def predict(url: str, records: list[dict[str, Any]], timeout_s: float = 10.0) -> dict[str, Any]:
    response = httpx.post(f"{url}/predict", json={"records": records}, timeout=timeout_s)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def served_version(url: str, model_name: str, timeout_s: float = 5.0, verify: bool | str = True) -> str:
    response = httpx.get(f"{url}/v2/models/{model_name}", timeout=timeout_s, verify=verify)
    response.raise_for_status()
    return str(response.json()["versions"][0])


def ensure_running(service: LocalService) -> str:
    """Start the local service if it is not running and wait until it is ready; say which it was."""
    if service.pid() is not None:
        return "running"
    service.start()
    service.wait_ready()
    return "started"


def local_replica(settings: Settings) -> Replica:
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    return Replica(settings.serve_url, api_key=api_key, verify=LocalService(settings).verify)
