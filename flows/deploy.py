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

    @property
    def verify(self) -> bool | str:
        """TLS verification for our own calls: the configured certificate is its own authority."""
        return str(self.settings.tls_certfile) if self.settings.tls_certfile else True

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
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self.command(),
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
                if httpx.get(f"{self.url}/readyz", timeout=2, verify=self.verify).status_code == 200:
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


def served_version(url: str, model_name: str, timeout_s: float = 5.0, verify: bool | str = True) -> str:
    response = httpx.get(f"{url}/v2/models/{model_name}", timeout=timeout_s, verify=verify)
    response.raise_for_status()
    return str(response.json()["versions"][0])


def wait_for_version(
    url: str, model_name: str, version: str, timeout_s: float, consecutive: int = 3, verify: bool | str = True
) -> float:
    """Poll until ``consecutive`` answers in a row (any worker) report ``version``; return seconds taken."""
    started = time.monotonic()
    streak = 0
    while time.monotonic() - started < timeout_s:
        try:
            streak = streak + 1 if served_version(url, model_name, verify=verify) == version else 0
        except (httpx.HTTPError, KeyError, ValueError):
            streak = 0
        if streak >= consecutive:
            return time.monotonic() - started
        time.sleep(0.1)
    raise ServiceError(f"{url} did not serve {model_name} v{version} within {timeout_s:.0f}s")


def deploy_local(service: LocalService, expected_version: str) -> str:
    """Make the local service serve ``expected_version``; return what happened.

    A running service follows the ``champion`` alias by itself (each worker loads, self-tests and swaps
    the new version without dropping requests); one that is not running is started.
    """
    settings = service.settings
    action = "followed the alias"
    if service.pid() is None:
        service.start()
        action = "started"
    service.wait_ready(settings.serve_start_timeout_s)
    waited = wait_for_version(
        service.url,
        settings.model_name,
        expected_version,
        timeout_s=settings.serve_start_timeout_s,
        consecutive=3 * settings.serve_workers,
        verify=service.verify,
    )
    return f"{action}, serving v{expected_version} after {waited:.1f}s"
