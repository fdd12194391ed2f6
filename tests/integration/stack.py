"""Helpers for tests that run ``mlops stack`` as a real process and drive it over HTTP and a browser."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prefect.client.schemas.objects import FlowRun

from flows import prefect_api
from flows.deploy import served_version
from models.settings import Settings
from tests.integration.newcomer import Command, make

CHROMIUM = Path("/usr/bin/chromium")
FINAL = set(prefect_api.FINAL)
# The service runs beside two servers, a worker and flow runs on 2 cores: latency is not under test here.
RELAXED_CHECKS = {"latency_p99_ms": 2000, "bake_s": 2, "bake_p99_ms": 4000, "probe_requests": 50}


@dataclass
class RunningStack:
    settings: Settings
    command: Command

    @property
    def api(self) -> str:
        return self.settings.prefect_api_url

    @property
    def ui(self) -> str:
        return self.api.removesuffix("/api")

    def text(self) -> str:
        return self.command.text()

    def pids(self) -> list[int]:
        """Every process the stack started: its servers and worker, and the model service."""
        state = self.settings.state_path
        pids = list(json.loads((state / "stack.pids").read_text()).values())
        return [*pids, int((state / "serve.pid").read_text())]

    def deployment_id(self, name: str) -> str:
        with prefect_api.client(self.api) as prefect:
            return str(prefect_api.deployment_id(prefect, name))

    def scheduled_runs(self, deployment: str, timeout_s: float = 60) -> list[str]:
        """Expected start times of the deployment's scheduled runs, once the scheduler has made some."""
        deadline = time.monotonic() + timeout_s
        with prefect_api.client(self.api) as prefect:
            wanted = prefect_api.deployment_id(prefect, deployment)
            while True:
                starts = prefect_api.scheduled_starts(prefect, wanted)
                if starts or time.monotonic() > deadline:
                    return [start.isoformat().replace("+00:00", "Z") for start in starts]
                time.sleep(1)

    def create_run(self, deployment: str, parameters: dict[str, Any]) -> str:
        """What the UI's "Run" button posts."""
        with prefect_api.client(self.api) as prefect:
            return prefect_api.create_run(prefect, deployment, parameters)

    def wait_run(self, run_id: str, until: set[str] = FINAL, timeout_s: float = 180) -> FlowRun:
        with prefect_api.client(self.api) as prefect:
            run = prefect_api.wait_run(prefect, run_id, until, timeout_s)
        if run is None:
            raise AssertionError(f"flow run {run_id} not in {until} after {timeout_s}s:\n{self.text()}")
        return run

    @staticmethod
    def state(run: FlowRun) -> str:
        return run.state.type.value if run.state is not None else "NONE"

    def served(self) -> str:
        return served_version(self.settings.serve_url, self.settings.model_name)

    def served_models(self, timeout_s: float = 30) -> set[str]:
        """The models every worker serves (each worker finds a new model at its own poll)."""
        deadline, seen = time.monotonic() + timeout_s, set[str]()
        while time.monotonic() < deadline:
            url = f"{self.settings.serve_url}/v2/repository/index"
            answers = [  # a new connection each time: the answers come from both workers
                {e["name"] for e in httpx.post(url, headers={"connection": "close"}, timeout=10).json()}
                for _ in range(6)
            ]
            seen = set.intersection(*answers)
            if all(a == answers[0] for a in answers):
                return seen
            time.sleep(0.5)
        return seen

    def wait_served(self, version: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.served() != version:
            time.sleep(0.5)
        assert self.served() == version


@contextmanager
def running_stack(
    folder: Path, output: Path, settings: Settings | None = None, timeout_s: float = 900
) -> Iterator[RunningStack]:
    """``make stack`` in ``folder`` as a person starts it; stopped with Ctrl-C unless the test did.

    Without ``settings``, the README's defaults (Prefect :4200, MLflow :5000, serving :3000, state in the
    clone's ``.mlops``); with them, as ``MLOPS_`` variables. The limit covers a first start from a fresh
    clone: the install, both servers on new databases, the deployments and the first pipeline run.
    """
    env = settings.to_env() if settings is not None else {}
    settings = settings or Settings(state_dir=folder / ".mlops")
    with make(folder, "stack", output, env) as command:
        command.wait_for("the stack is up", timeout_s)
        yield RunningStack(settings, command)
