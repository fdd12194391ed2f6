"""Helpers for tests that run ``mlops stack`` as a real process and drive it over HTTP and a browser."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flows.deploy import served_version
from flows.tracking import PROJECT_ROOT
from models.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# The service runs beside two servers, a worker and flow runs on 2 cores: latency is not under test here.
RELAXED_CHECKS = {"latency_p99_ms": 2000, "bake_s": 2, "bake_p99_ms": 4000, "probe_requests": 50}


@dataclass
class RunningStack:
    settings: Settings
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def api(self) -> str:
        return self.settings.prefect_api_url

    @property
    def ui(self) -> str:
        return self.api.removesuffix("/api")

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def pids(self) -> list[int]:
        """Every process the stack started: its servers and worker, and the model service."""
        state = self.settings.state_path
        pids = list(json.loads((state / "stack.pids").read_text()).values())
        return [*pids, int((state / "serve.pid").read_text())]

    def deployment_id(self, name: str) -> str:
        found = httpx.post(
            f"{self.api}/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}, timeout=10
        ).json()
        assert len(found) == 1, (name, found)
        return str(found[0]["id"])

    def scheduled_runs(self, deployment: str, timeout_s: float = 60) -> list[str]:
        """Expected start times of the deployment's scheduled runs, once the scheduler has made some."""
        query = {
            "deployments": {"id": {"any_": [self.deployment_id(deployment)]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        }
        deadline = time.monotonic() + timeout_s
        while True:
            runs = httpx.post(f"{self.api}/flow_runs/filter", json=query, timeout=10).json()
            if runs or time.monotonic() > deadline:
                return [str(run["expected_start_time"]).replace("+00:00", "Z") for run in runs]
            time.sleep(1)

    def create_run(self, deployment: str, parameters: dict[str, Any]) -> str:
        """What the UI's "Run" button posts."""
        url = f"{self.api}/deployments/{self.deployment_id(deployment)}/create_flow_run"
        for _ in range(10):  # SQLite busy: the server answers 503 and clients retry, as Prefect's own do
            response = httpx.post(url, json={"parameters": parameters}, timeout=10)
            if response.status_code != 503:
                break
            time.sleep(1)
        response.raise_for_status()
        return str(response.json()["id"])

    def wait_run(self, run_id: str, until: set[str] = FINAL, timeout_s: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run: dict[str, Any] = httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=10).json()
            if run["state"]["type"] in until:
                return run
            time.sleep(1)
        raise AssertionError(f"flow run {run_id} not in {until} after {timeout_s}s:\n{self.text()}")

    def served(self) -> str:
        return served_version(self.settings.serve_url, self.settings.model_name)

    def wait_served(self, version: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.served() != version:
            time.sleep(0.5)
        assert self.served() == version


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def running_stack(settings: Settings, output: Path, timeout_s: float = 420) -> Iterator[RunningStack]:
    """``mlops stack`` started as a person would, stopped with Ctrl-C (SIGINT) unless the test did."""
    env = {**os.environ, **settings.to_env()}
    with output.open("ab") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlops")), "stack"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = RunningStack(settings, process, output)
    try:
        deadline = time.monotonic() + timeout_s
        while "the stack is up" not in stack.text():
            assert process.poll() is None, f"mlops stack exited {process.returncode}:\n{stack.text()}"
            assert time.monotonic() < deadline, f"not up after {timeout_s}s:\n{stack.text()}"
            time.sleep(0.5)
        yield stack
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                raise
