"""Deployment of the champion to the local BentoML service, and the checks that prove it serves."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flows.tracking import PROJECT_ROOT
from models.settings import Settings

SERVICE_TARGET = "serving.service:ModelService"


class ServiceError(RuntimeError):
    """The service did not start, or does not serve what it should."""


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False  # our own child, already exited: reaped now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def environment(self) -> dict[str, str]:
        state = self.settings.state_path
        return {
            **os.environ,
            "MLOPS_STATE_DIR": str(state),
            "MLOPS_TRACKING_URI": self.settings.resolved_tracking_uri,
            "MLOPS_MODEL_NAME": self.settings.model_name,
            "BENTOML_HOME": str(state / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
        }

    def start(self) -> int:
        if (pid := self.pid()) is not None:
            return pid
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        bentoml = Path(sys.executable).with_name("bentoml")
        command = [
            str(bentoml),
            "serve",
            SERVICE_TARGET,
            "--working-dir",
            str(PROJECT_ROOT),
            "--host",
            self.settings.serve_host,
            "--port",
            str(self.settings.serve_port),
        ]
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop the process group; return whether something was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise ServiceError(f"service exited during start-up; log tail:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise ServiceError(f"service not ready after {timeout_s:.0f}s; log tail:\n{self.log_tail()}")


def predict(url: str, records: list[dict[str, Any]], timeout_s: float = 10.0) -> dict[str, Any]:
    response = httpx.post(f"{url}/predict", json={"records": records}, timeout=timeout_s)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@dataclass(frozen=True)
class GoldenCheck:
    served_version: str
    expected_version: str
    mismatches: int
    rows: int
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        return self.served_version == self.expected_version and self.mismatches == 0


def golden_check(url: str, golden: dict[str, Any], expected_version: str, tolerance: float) -> GoldenCheck:
    """Send the golden rows recorded at gate time; the answers must match and name the version."""
    body = predict(url, golden["records"])
    predictions = body["predictions"]
    if "labels" in golden:
        diffs = [
            max(abs(got - want) for got, want in zip(p["probabilities"].values(), expected, strict=True))
            for p, expected in zip(predictions, golden["probabilities"], strict=True)
        ]
        mismatches = sum(
            p["label"] != label or d > tolerance
            for p, label, d in zip(predictions, golden["labels"], diffs, strict=True)
        )
    else:
        diffs = [abs(p["value"] - e) for p, e in zip(predictions, golden["values"], strict=True)]
        mismatches = sum(d > tolerance for d in diffs)
    return GoldenCheck(
        served_version=str(body["model_version"]),
        expected_version=expected_version,
        mismatches=mismatches,
        rows=len(predictions),
        max_abs_diff=max(diffs, default=0.0),
    )


def deploy_local(service: LocalService, expected_version: str) -> str:
    """Make the local service serve ``expected_version``; return what happened.

    Until the service follows the alias by itself, a service on another version is restarted.
    """
    if service.pid() is None:
        service.start()
        action = "started"
    else:
        try:
            served = served_version(service.url, service.settings.model_name)
        except (httpx.HTTPError, KeyError):
            served = None
        if served == expected_version:
            return "already serving"
        service.stop()
        service.start()
        action = "restarted"
    service.wait_ready(service.settings.serve_start_timeout_s)
    return action


def served_version(url: str, model_name: str) -> str:
    response = httpx.get(f"{url}/v2/models/{model_name}", timeout=5)
    response.raise_for_status()
    return str(response.json()["versions"][0])
