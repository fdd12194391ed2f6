"""The local stack: MLflow and Prefect servers with their UIs, a worker, the deployments, the service.

``mlops stack`` starts everything on loopback, runs the training pipeline once through its deployment when
no model is champion yet, prints every URL and stays in the foreground; Ctrl-C (or SIGTERM) stops every
process it started. All state (both servers' databases, artifacts, logs) lives in the state folder, so a
second start picks up where the first stopped. The databases are SQLite unless the settings name others
(``MLOPS_MLFLOW_BACKEND_STORE_URI``, ``MLOPS_PREFECT_DATABASE_URL``: PostgreSQL to scale out).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from flows.processes import StartupError, alive, log_tail, spawn, stop_group, timed_out, wait_http
from flows.tracking import PROJECT_ROOT
from models.settings import Settings

WORK_POOL = "mlops-process"
PIPELINE_DEPLOYMENT = "training-pipeline/training-pipeline"
BROWSER = {"Accept": "text/html"}  # the UIs answer page routes to browsers only


class StackError(StartupError):
    """A part of the stack did not start; the message names it and quotes its log."""


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def stack_settings(settings: Settings) -> Settings:
    """The settings every process of the stack shares: flows and the service talk to the MLflow server,
    and the service serves ``MLOPS_MODEL_NAME`` first and every other model with a champion (unless
    ``MLOPS_SERVE_MODELS`` says otherwise)."""
    serve = settings.serve_models or [settings.model_name, "*"]
    return settings.model_copy(update={"tracking_uri": settings.mlflow_url, "serve_models": serve})


@dataclass(frozen=True)
class DemoModel:
    """A registered model the stack trains on its first start, and the pipeline's parameters for it."""

    model_name: str
    parameters: dict[str, Any]


# The other two demo datasets, as the README's runs of them, each its own registered model; the first model
# (breast cancer, MLOPS_MODEL_NAME) is the deployment's own parameters.
DEMO_MODELS = (
    DemoModel(
        "churn-classifier",
        {
            "data_source": "demo:churn",
            "dataset": "churn",
            "recipe": "hist_gradient_boosting",
            "gate_config": {"metric_floors": {"roc_auc": 0.7}},
        },
    ),
    DemoModel(
        "housing-regressor",
        {
            "data_source": "demo:housing",
            "dataset": "housing",
            "recipe": "ridge",
            "gate_config": {
                "metric_floors": {"r2": 0.9},
                "metric_ceilings": {"rmse": 60},
                "max_regression": {"rmse": 1.0},
            },
        },
    ),
)


def demo_models(settings: Settings) -> list[DemoModel]:
    """The demo models the stack's service serves (all of them unless ``MLOPS_SERVE_MODELS`` names others)."""
    served = settings.served_models
    return [m for m in DEMO_MODELS if "*" in served or m.model_name in served]


def pids_file(settings: Settings) -> Path:
    return settings.state_path / "stack.pids"


def prefect_env(settings: Settings) -> dict[str, str]:
    """What a Prefect client, server or worker of this stack reads."""
    home = settings.state_path / "prefect"
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": settings.prefect_api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_CLI_COLORS": "false",
    }
    if settings.prefect_database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = settings.prefect_database_url
    return env


@dataclass(frozen=True)
class Component:
    """One long-running process of the stack and how to tell it is ready."""

    name: str
    command: list[str]
    ready_url: str | None
    log_file: Path
    start_timeout_s: float
    timeout_setting: str  # the environment variable that sets ``start_timeout_s``
    env: Mapping[str, str] = field(default_factory=dict)


# MLflow 3's server also starts a job runner and seven Huey consumers for its GenAI jobs (online scoring,
# judges), which this product does not use: measured here, 2.5 GiB and 29 CPU-seconds in its first 18 s
# against 0.5 GiB and 5 s without them, ready in 6 s instead of 10, stopped in 3.5 s instead of 6.5.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def components(settings: Settings) -> dict[str, Component]:
    state = settings.state_path
    logs = state / "logs"
    backend = settings.mlflow_backend_store_uri or f"sqlite:///{state / 'mlflow.db'}"
    host = settings.serve_host
    child_env = {**settings.to_env(), **prefect_env(settings)}
    return {
        "mlflow": Component(
            name="MLflow server",
            command=[
                _bin("mlflow"),
                "server",
                "--host",
                host,
                "--port",
                str(settings.mlflow_port),
                "--backend-store-uri",
                backend,
                "--default-artifact-root",
                settings.resolved_artifact_uri,
                "--no-serve-artifacts",
                "--workers",
                "1",
            ],
            ready_url=f"{settings.mlflow_url}/health",
            log_file=logs / "mlflow-server.log",
            env=MLFLOW_SERVER_ENV,
            start_timeout_s=settings.mlflow_start_timeout_s,
            timeout_setting="MLOPS_MLFLOW_START_TIMEOUT_S",
        ),
        "prefect": Component(
            name="Prefect server",
            command=[
                _bin("prefect"),
                "server",
                "start",
                "--host",
                host,
                "--port",
                str(settings.prefect_port),
            ],
            ready_url=f"{settings.prefect_api_url}/health",
            log_file=logs / "prefect-server.log",
            start_timeout_s=settings.prefect_start_timeout_s,
            timeout_setting="MLOPS_PREFECT_START_TIMEOUT_S",
            env=child_env,
        ),
        "worker": Component(
            name="Prefect worker",
            command=[
                _bin("prefect"),
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
                "--name",
                f"mlops-{host}-{settings.prefect_port}",
            ],
            ready_url=None,
            log_file=logs / "prefect-worker.log",
            start_timeout_s=settings.worker_start_timeout_s,
            timeout_setting="MLOPS_WORKER_START_TIMEOUT_S",
            # a run started from the UI begins within this, not Prefect's default 10 s
            env={**child_env, "PREFECT_WORKER_QUERY_SECONDS": str(settings.worker_poll_s)},
        ),
    }


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Supervisor:
    """Starts processes in their own sessions, remembers them on disk, and stops them all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, key: str, component: Component) -> None:
        self.processes[key] = spawn(component.command, component.log_file, component.env, PROJECT_ROOT)
        self._remember()

    def _remember(self) -> None:
        pids = {key: process.pid for key, process in self.processes.items()}
        pids_file(self.settings).write_text(json.dumps(pids))

    def wait_ready(self, key: str, component: Component) -> float:
        """Until the component's ready URL answers, within its own start-up limit; the seconds it took."""
        assert component.ready_url is not None, component.name
        return wait_http(
            component.ready_url,
            component.start_timeout_s,
            exited=lambda: key in self.exited(),
            what=component.name,
            setting=f"{component.timeout_setting}={component.start_timeout_s:g}",
            log_file=component.log_file,
        )

    def exited(self) -> list[str]:
        return [key for key, process in self.processes.items() if process.poll() is not None]

    def stop(self, out: Callable[[str], None], timeout_s: float = 20.0) -> None:
        """Stop in reverse start order: SIGTERM to each process group, SIGKILL what outlives the timeout."""
        for key in reversed(list(self.processes)):
            began = time.monotonic()
            stop_group(self.processes[key].pid, timeout_s, self.processes[key].poll)
            out(f"  {key} stopped in {time.monotonic() - began:.1f}s")
        self.processes.clear()
        pids_file(self.settings).unlink(missing_ok=True)


def stop_leftovers(settings: Settings) -> list[int]:
    """Stop the processes of a stack that did not stop itself (killed, or the machine's session ended)."""
    try:
        pids: dict[str, int] = json.loads(pids_file(settings).read_text())
    except (FileNotFoundError, ValueError):
        return []
    left = [pid for pid in pids.values() if alive(pid)]
    for pid in left:
        stop_group(pid, timeout_s=10.0)
    pids_file(settings).unlink(missing_ok=True)
    return left


def deployment_names(path: Path = PROJECT_ROOT / "prefect.yaml") -> list[str]:
    import yaml

    return [str(entry["name"]) for entry in yaml.safe_load(path.read_text())["deployments"]]


def deployment_digest() -> str:
    """What the applied deployments derive from: prefect.yaml and the flows' code (their signatures)."""
    import hashlib

    digest = hashlib.sha256()
    for path in [PROJECT_ROOT / "prefect.yaml", *sorted((PROJECT_ROOT / "flows").glob("*.py"))]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_cli(command: list[str], env: Mapping[str, str], log_file: Path, what: str) -> None:
    """A one-shot Prefect CLI step (work pool, deployments); its output goes to the log."""
    with log_file.open("ab") as log:
        done = subprocess.run(
            command, cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise StackError(f"{what} failed (exit {done.returncode}):\n{log_tail(log_file)}")


@dataclass
class Progress:
    """One line per step on the terminal: what is happening, then how long it took."""

    total: int
    out: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    step: int = 0

    @contextlib.contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        self.step += 1
        began = time.monotonic()
        self.out(f"» [{self.step}/{self.total}] {what} ...")
        yield
        self.out(f"  done in {time.monotonic() - began:.1f}s")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def urls(settings: Settings) -> dict[str, str]:
    prefect_ui = settings.prefect_api_url.removesuffix("/api")
    return {
        "Prefect UI": prefect_ui,
        "deployments": f"{prefect_ui}/deployments",
        "MLflow UI": settings.mlflow_url,
        "model registry": f"{settings.mlflow_url}/#/models/{settings.model_name}",
        "serving": settings.serve_url,
        "OpenAPI": f"{settings.serve_url}/openapi.json",
    }


class Stack:
    """Start, report and stop the local stack."""

    def __init__(self, settings: Settings, out: Callable[[str], None] = print) -> None:
        self.settings = stack_settings(settings)
        self.out = out
        self.supervisor = Supervisor(self.settings)
        self.components = components(self.settings)

    def check_ports(self) -> None:
        s = self.settings
        for name, port in (("Prefect", s.prefect_port), ("MLflow", s.mlflow_port), ("serving", s.serve_port)):
            if port_in_use(s.serve_host, port):
                raise StackError(
                    f"port {port} ({name}) is already in use on {s.serve_host}: another stack or server "
                    f"is running (stop it with `mlops stop`), or set MLOPS_{name.upper()}_PORT"
                )

    def start(self, pipeline: Callable[[dict[str, Any]], str]) -> None:
        """Everything up, the models served; ``pipeline(parameters)`` runs the training deployment with
        those parameters and says how it ended."""
        from flows.deploy import LocalService, ensure_running

        stop_leftovers(self.settings)
        self.check_ports()
        self.settings.state_path.mkdir(parents=True, exist_ok=True)
        progress = Progress(total=6, out=self.out)
        mlflow, prefect = self.components["mlflow"], self.components["prefect"]
        with progress("MLflow tracking server and Prefect server"):
            self.supervisor.start("mlflow", mlflow)
            self.supervisor.start("prefect", prefect)
            self.supervisor.wait_ready("prefect", prefect)
            self.supervisor.wait_ready("mlflow", mlflow)
        with progress(f"work pool {WORK_POOL} and the deployments of prefect.yaml"):
            self.apply_deployments()
        with progress("Prefect worker on the work pool"):
            self.supervisor.start("worker", self.components["worker"])
            self.wait_worker()
        service = LocalService(self.settings)
        if self.has_champion(self.settings.model_name):
            with progress("serving the champion (state from an earlier start)"):
                ensure_running(service)
        else:
            with progress(f"first model: a run of {PIPELINE_DEPLOYMENT} on the worker"):
                self.out(f"  {pipeline({})}")
            if service.pid() is None:
                raise StackError(
                    f"the first pipeline run served nothing; see {self.settings.state_path}/logs"
                )
        missing = [m for m in demo_models(self.settings) if not self.has_champion(m.model_name)]
        names = ", ".join(m.model_name for m in missing) or "none missing"
        with progress(f"the other demo models, served by the same service ({names})"):
            for model in missing:  # one after the other: each run's deploy checks probe the one service
                self.out(
                    f"  {model.model_name}: {pipeline({**model.parameters, 'model_name': model.model_name})}"
                )
        with progress("checking every URL answers"):
            for name, url in urls(self.settings).items():
                if name not in {"model registry"}:
                    httpx.get(url, timeout=10, headers=BROWSER, follow_redirects=True).raise_for_status()

    def apply_deployments(self) -> None:
        """``prefect deploy --all`` (about 15 s), skipped when the server has this prefect.yaml applied."""
        from flows import prefect_api

        env = {**self.components["prefect"].env}
        log = self.settings.state_path / "logs" / "prefect-deploy.log"
        names = deployment_names()
        with prefect_api.client(self.settings.prefect_api_url) as prefect:
            has_pool = prefect_api.work_pool_exists(prefect, WORK_POOL)
            found = prefect_api.deployments_named(prefect, names)
        if not has_pool:
            pool = [_bin("prefect"), "work-pool", "create", WORK_POOL, "--type", "process"]
            run_cli(pool, env, log, "creating the work pool")
        stamp, digest = self.settings.state_path / "prefect-deploy.digest", deployment_digest()
        if has_pool and stamp.exists() and stamp.read_text() == digest and len(found) == len(names):
            return
        run_cli([_bin("prefect"), "--no-prompt", "deploy", "--all"], env, log, "prefect deploy --all")
        stamp.write_text(digest)

    def has_champion(self, model_name: str) -> bool:
        from flows.gateway import gateway
        from models.registry import CHAMPION

        return (
            gateway(self.settings.model_copy(update={"model_name": model_name})).alias(CHAMPION) is not None
        )

    def wait_worker(self) -> None:
        """Ready when the server has a heartbeat from this worker since it started."""
        from flows import prefect_api

        worker, since = self.components["worker"], datetime.now(UTC)
        timeout_s = worker.start_timeout_s
        deadline = time.monotonic() + timeout_s
        with prefect_api.client(self.settings.prefect_api_url) as prefect:
            while time.monotonic() < deadline:
                if "worker" in self.supervisor.exited():
                    raise StackError(f"the worker exited:\n{log_tail(worker.log_file)}")
                if prefect_api.worker_seen_since(prefect, WORK_POOL, worker.command[-1], since):
                    return
                time.sleep(0.5)
        raise timed_out(worker.name, timeout_s, f"{worker.timeout_setting}={timeout_s:g}", worker.log_file)

    def describe(self) -> str:
        width = max(len(name) for name in urls(self.settings))
        lines = [f"  {name:<{width}}  {url}" for name, url in urls(self.settings).items()]
        lines.append(f"  {'state':<{width}}  {self.settings.state_path} (logs in logs/)")
        return "\n".join(lines)

    def wait(self, stop: threading.Event) -> str | None:
        """Until ``stop`` is set; returns the name of a component that died on its own, if one did."""
        while not stop.wait(1.0):
            if exited := self.supervisor.exited():
                return self.components[exited[0]].name
        return None

    def stop(self) -> None:
        from flows.deploy import LocalService

        began = time.monotonic()
        if LocalService(self.settings).stop():
            self.out(f"  service stopped in {time.monotonic() - began:.1f}s")
        self.supervisor.stop(self.out)


def run_pipeline_deployment(
    out: Callable[[str], None], parameters: dict[str, Any] | None = None, timeout_s: float = 600
) -> str:
    """A run of the training deployment on the worker (``parameters`` over the deployment's own), its
    stage log lines echoed as they arrive."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    async def run() -> str:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(PIPELINE_DEPLOYMENT)
            flow_run = await client.create_flow_run_from_deployment(
                deployment.id, parameters=parameters or {}, tags=["mlops-stack"]
            )
            deadline, seen = time.monotonic() + timeout_s, 0
            while time.monotonic() < deadline:
                logs = await client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])), offset=seen
                )
                seen += len(logs)
                for entry in logs:
                    if "stage=" in entry.message:
                        out(f"  {entry.message[entry.message.index('stage=') :]}")
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
                )
                state = runs[0].state
                if state is not None and state.is_final() and not logs:  # its last lines are in
                    return f"flow run {runs[0].name}: {state.name}"
                await asyncio.sleep(1.0)
            return f"flow run {flow_run.name}: not finished after {timeout_s:.0f}s"

    return asyncio.run(run())
