"""Faults under steady load: what breaks, what keeps serving, how long it takes, what is lost.

    uv run python -m benchmarks.faults                 # every fault, registry down for 60 s (~6 min)
    uv run python -m benchmarks.faults --registry-down-s 15

A real system on 127.0.0.1: an ``mlflow server`` process as tracking server and registry, a real Prefect
server, ``bentoml serve`` with two workers following ``champion`` through the tracking server, and steady
single-row load from a separate process (``benchmarks.loadgen``, closed loop, a retry on connection errors
as a client would have). Then, one after the other:

* **serving worker killed**: SIGKILL to one ``bentoml`` worker; its supervisor starts a new one.
* **corrupted / missing model artifact**: ``champion`` moved straight in the registry (no deploy checks)
  to a copy of the served version whose ONNX file is garbage, then to one whose ONNX file was deleted.
* **inference log unwritable**: every worker's file-size limit (RLIMIT_FSIZE) set below its log
  segment's size, so each log ``write`` fails with EFBIG as on a full disk; then lifted.
* **inference log unwritable, fail closed**: the same fault on the service restarted with
  ``MLOPS_INFERENCE_LOG_POLICY=fail_closed``: answers the log cannot record are refused (503, a clear
  error) instead of going out unlogged; nothing answered is missing from the log.
* **registry unreachable**: the tracking server killed for ``--registry-down-s``; a pipeline run started
  while it is down fails its registry check with a clear message, retries, and succeeds once it is back.
* **Prefect worker killed mid-run**: SIGKILL to a Prefect worker and its flow-run process right after the
  run registered its version; the server marks the run Crashed (missed heartbeats, an automation); a rerun
  takes the version over (no duplicate) and finishes the promotion.

Every answer's request id is looked up in the inference log afterwards: records lost = answers (2xx) the
service said it logged that are not in the log. Writes ``benchmarks/results/faults.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import re
import resource
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from benchmarks.loadgen import spawn_load
from benchmarks.report import publish
from flows import prefect_api
from flows.checks import DeployChecks
from flows.deploy import LocalService
from flows.gate import GateConfig
from flows.processes import free_port, stop_group
from flows.stack import Supervisor, components
from flows.tracking import PROJECT_ROOT
from models.inference_records import PROBE_HEADER
from models.settings import Settings

RESULTS = Path(__file__).parent / "results"
# The load, two flows and the service share two cores: latency is not what these faults test.
GATE = GateConfig(max_regression={}, latency_p99_ms=50)
CHECKS = DeployChecks(
    ready_timeout_s=60,
    version_timeout_s=30,
    probe_requests=20,
    probe_concurrency=2,
    latency_p99_ms=2000,
    bake_s=2,
    bake_p99_ms=4000,
)
WORK_POOL = "faults-process"
REGISTRY_RESTART_S = 120  # the pipeline's retry window beyond the outage (a busy machine restarts slowly)
ZOMBIE_AFTER_S = 45  # no heartbeat (every 30 s, Prefect's minimum) for this long: the run is Crashed


@dataclass
class FaultResult:
    fault: str
    started: float  # epoch seconds: the load's requests sent in [started, ended] belong to this fault
    ended: float
    outage_s: float | None  # what is timed: ``outage``
    outage: str
    notes: str
    sent: int = 0
    failed: int = 0  # answered with an error or not at all, after the client's one retry
    retried: int = 0  # connection errors the retry absorbed (a client without one sees them as failed)
    not_logged: int = 0  # answered with "logged": false (the stated policy when the log cannot be written)
    lost: int = 0  # answered, said logged, but no record in the inference log


# --- the system under test -------------------------------------------------------------------------------


def rig_settings(workdir: Path, swap_poll_s: float, ports: Callable[[], int] = free_port) -> Settings:
    """Tracking and registry through a real ``mlflow server``; every process reads these settings."""
    mlflow_port, prefect_port = ports(), ports()
    return Settings(
        state_dir=workdir / "state",
        serve_port=ports(),
        mlflow_port=mlflow_port,
        prefect_port=prefect_port,
        tracking_uri=f"http://127.0.0.1:{mlflow_port}",
        swap_poll_s=swap_poll_s,
        serve_workers=2,
    )


@dataclass
class Rig:
    """The servers of one run: MLflow and (for the worker fault) Prefect, and the model service."""

    settings: Settings
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.settings.state_path.mkdir(parents=True, exist_ok=True)
        self.supervisor = Supervisor(self.settings)

    @property
    def service(self) -> LocalService:
        return LocalService(self.settings)

    def start_server(self, key: str) -> None:
        component = components(self.settings)[key]
        self.supervisor.start(key, component)
        self.supervisor.wait_ready(key, component)

    def kill_server(self, key: str) -> None:
        stop_group(self.supervisor.processes[key].pid, timeout_s=0)  # SIGKILL at once, no grace
        self.supervisor.processes[key].wait(timeout=10)

    def stop(self) -> None:
        self.service.stop()
        self.supervisor.stop(lambda line: None)


@contextlib.contextmanager
def running_rig(settings: Settings, prefect: bool) -> Iterator[Rig]:
    rig = Rig(settings)
    try:
        rig.start_server("mlflow")
        if prefect:
            rig.start_server("prefect")
        yield rig
    finally:
        rig.stop()


def first_model(rig: Rig) -> dict[str, Any]:
    """v1 trained, promoted and served; returns a request body of one held-out row."""
    from flows.training import training_pipeline
    from models import datasets

    result = training_pipeline(gate_config=GATE, deploy_checks=CHECKS)
    assert result.version == "1", result
    spec = datasets.BREAST_CANCER
    holdout = datasets.split(datasets.load_frame(datasets.demo_source(spec.name)), spec).holdout
    return {"records": datasets.records(holdout.head(1), spec)}


# --- observing the service -------------------------------------------------------------------------------


def metric(url: str, name: str, labels: str = "") -> float:
    """Sum of a counter over BentoML's multiprocess ``/metrics`` (0 when not there yet)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.e+-]+)$", re.MULTILINE)
    return sum(float(m.group(2)) for m in pattern.finditer(text) if labels in (m.group(1) or ""))


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def serving_workers(service: LocalService) -> list[int]:
    """Pids of the ``bentoml serve`` worker processes (those that load the model and answer)."""
    root = service.pid()
    assert root is not None, "the service is not running"
    return sorted(p for p in descendants(root) if "_bentoml_impl.worker.service" in cmdline(p))


def served_version(service: LocalService) -> str:
    from flows.deploy import served_version as version

    return version(service.url, service.settings.model_name)


def wait_until(what: str, ready: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> float:
    """Seconds until ``ready()``; AssertionError after ``timeout_s``."""
    began = time.monotonic()
    while not ready():
        assert time.monotonic() - began < timeout_s, f"{what}: not within {timeout_s:.0f}s"
        time.sleep(every_s)
    return time.monotonic() - began


# --- the faults ------------------------------------------------------------------------------------------


def kill_serving_worker(rig: Rig, body: dict[str, Any]) -> FaultResult:
    """SIGKILL one worker; timed until the new worker answers (a request lands in its own log segment).

    The load's keep-alive connections stay on the surviving worker, so each probe opens a new one.
    """
    service, log_dir = rig.service, rig.settings.inference_log_dir
    before = serving_workers(service)
    assert len(before) == rig.settings.serve_workers, before
    victim = before[0]
    started = time.time()
    not_ready = 0
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        nonlocal not_ready
        with contextlib.suppress(httpx.HTTPError):
            not_ready += httpx.get(f"{service.url}/readyz", timeout=2).status_code != 200
            httpx.post(f"{service.url}/predict", json=body, timeout=5, headers={PROBE_HEADER: "1"})
        fresh = [p for p in serving_workers(service) if p not in before]
        return bool(fresh) and any(log_dir.glob(f"*-p{fresh[0]}-*.jsonl"))

    outage = wait_until("a new worker answering", replaced, timeout_s=120, every_s=0.2)
    after = serving_workers(service)
    assert victim not in after and len(after) == rig.settings.serve_workers, (before, after)
    notes = (
        f"worker pid {victim} SIGKILLed; supervisor started pid {sorted(set(after) - set(before))[0]}; "
        f"/readyz answered not-ready {not_ready} times meanwhile (the other worker serves)"
    )
    return FaultResult(
        "serving worker killed (SIGKILL)",
        started,
        time.time(),
        outage,
        "kill -> the new worker answers requests",
        notes,
    )


def broken_alias(rig: Rig, kind: str) -> FaultResult:
    """Move ``champion`` straight to a broken copy of the served version; the workers refuse it."""
    from flows.faults import register_broken_version
    from flows.tracking import connect

    settings, service = rig.settings, rig.service
    client = connect(settings)
    served = served_version(service)
    broken = register_broken_version(client, settings, served, "unloadable")
    if kind == "missing":
        model_id = client.get_model_version(settings.model_name, broken).tags["onnx.model_uri"]
        location = client.get_logged_model(model_id.removeprefix("models:/")).artifact_location
        for file in Path(location.removeprefix("file://")).rglob("*.onnx"):
            file.unlink()
    refused_before = metric(service.url, "mlops_alias_events_total", 'event="swap_failed"')
    started = time.time()
    client.set_registered_model_alias(settings.model_name, "champion", broken)

    def refused() -> bool:
        return metric(service.url, "mlops_alias_events_total", 'event="swap_failed"') >= refused_before + 2

    refused_s = wait_until("both workers refusing the broken version", refused, timeout_s=60)
    time.sleep(2)  # a few more polls: still the old version
    assert served_version(service) == served
    client.set_registered_model_alias(settings.model_name, "champion", served)
    what = "ONNX file replaced by garbage" if kind == "corrupted" else "ONNX file deleted from the store"
    return FaultResult(
        f"{kind} model artifact behind champion",
        started,
        time.time(),
        0.0,
        "none: the old version kept serving",
        f"v{broken}: {what}; both workers refused it in {refused_s:.1f}s (swap_failed); v{served} served",
    )


def set_file_size_limit(pids: list[int], limit: int) -> None:
    for pid in pids:
        hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


def log_unwritable(rig: Rig, seconds: float) -> FaultResult:
    """Each worker's log writes fail (EFBIG, like a full disk) for ``seconds``; predictions continue."""
    service = rig.service
    pids = serving_workers(service)
    failures_before = metric(service.url, "mlops_inference_log_failures_total")
    started = time.time()
    set_file_size_limit(pids, 1)  # below every open segment's size: each append fails
    try:
        time.sleep(seconds)
    finally:
        set_file_size_limit(pids, resource.RLIM_INFINITY)
    ended = time.time()
    time.sleep(1)
    failures = metric(service.url, "mlops_inference_log_failures_total") - failures_before
    return FaultResult(
        "inference log unwritable (disk full)",
        started,
        ended,
        0.0,
        "none: predictions continued, answered with logged=false",
        f"{int(failures)} log write failures counted by mlops_inference_log_failures_total",
    )


FAIL_CLOSED = "inference log unwritable, policy fail_closed"


def log_unwritable_fail_closed(rig: Rig, plan: Plan, body: dict[str, Any], workdir: Path) -> FaultResult:
    """The log fault again, on the service restarted to fail closed, under a load of its own."""
    rig.service.stop()
    rig.settings = rig.settings.model_copy(update={"inference_log_policy": "fail_closed"})
    os.environ.update(rig.settings.to_env())
    service = rig.service
    service.start()
    service.wait_ready()
    load = spawn_load(f"{service.url}/predict", body, workdir / "load-closed.jsonl", 600, plan.connections,
                      retries=1, rate=plan.rate)  # fmt: skip
    try:
        time.sleep(2)
        pids = serving_workers(service)
        started = time.time()
        set_file_size_limit(pids, 1)
        try:
            time.sleep(plan.log_fault_s)
        finally:
            set_file_size_limit(pids, resource.RLIM_INFINITY)
        ended = time.time()
        time.sleep(2)
    finally:
        outcomes = load.finish()
    result = FaultResult(FAIL_CLOSED, started, ended, None, "refusals while the log cannot be written", "")
    account([result], outcomes, logged_request_ids(rig.settings.inference_log_dir))
    refused = [o for o in outcomes if started <= o["started"] <= ended and o["status"] != 200]
    statuses = sorted({o["status"] for o in refused})
    said = sum("records are mandatory" in (o.get("error") or "") for o in refused)
    result.notes = (
        f"{len(refused)} refused with {statuses or 'nothing'}, {said} saying why (records are mandatory); "
        "none answered unlogged; answering again once the log was writable"
    )
    return result


def registry_down(rig: Rig, seconds: float, retry_delay_s: float) -> FaultResult:
    """Kill the tracking server for ``seconds``; a pipeline started meanwhile retries and succeeds."""
    from flows.tracking import RegistryUnavailableError, registry_reachable
    from flows.training import training_pipeline

    settings, service = rig.settings, rig.service
    served = served_version(service)
    errors_before = metric(service.url, "mlops_alias_events_total", 'event="registry_error"')
    started = time.time()
    rig.kill_server("mlflow")
    down_at = time.monotonic()
    try:
        registry_reachable(settings.resolved_tracking_uri)
        message = "(reachable?)"
    except RegistryUnavailableError as exc:
        message = str(exc)
    outcome: dict[str, Any] = {}

    def pipeline() -> None:
        began = time.monotonic()
        try:
            result = training_pipeline(
                recipe="random_forest",
                gate_config=GATE,
                deploy_checks=CHECKS,
                deploy_target="none",  # the service follows the alias by itself: timed below
                registry_retries=int((seconds + REGISTRY_RESTART_S) / retry_delay_s),
                registry_retry_delay_s=retry_delay_s,
            )
            outcome["result"] = result
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - began
        outcome["ended"] = time.monotonic()

    runner = threading.Thread(target=pipeline, name="pipeline-while-registry-down")
    runner.start()
    time.sleep(max(0.0, seconds - (time.monotonic() - down_at)))
    assert served_version(service) == served, "serving changed while the registry was down"
    registry_errors = (
        metric(service.url, "mlops_alias_events_total", 'event="registry_error"') - errors_before
    )
    rig.start_server("mlflow")
    back_at = time.monotonic()
    runner.join(timeout=600)
    assert "result" in outcome, f"pipeline did not succeed after the registry came back: {outcome}"
    result = outcome["result"]
    assert result.verdict == "champion", result
    follow_s = wait_until(
        "the service following the new champion", lambda: served_version(service) == result.version, 60
    )
    return FaultResult(
        f"registry unreachable {seconds:.0f} s",
        started,
        time.time(),
        back_at - down_at,
        "tracking server down (serving: no outage)",
        f"served v{served} throughout ({int(registry_errors)} follower registry errors); pipeline started "
        f"while down: '{message[:110]}...', retried, then promoted v{result.version} "
        f"{outcome['ended'] - back_at:.0f}s after the registry was back (served {follow_s:.1f}s later)",
    )


# --- Prefect worker killed mid-run -----------------------------------------------------------------------


def create_deployment(settings: Settings, parameters: dict[str, Any]) -> str:
    """A process work pool and a deployment of the training pipeline from this checkout."""
    from prefect.client.schemas.actions import WorkPoolCreate

    with prefect_api.client(settings.prefect_api_url) as prefect:
        if not prefect_api.work_pool_exists(prefect, WORK_POOL):
            prefect.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
        deployment = prefect.create_deployment(
            prefect.create_flow_from_name("training-pipeline"),
            "faults",
            work_pool_name=WORK_POOL,
            entrypoint="flows/training.py:training_pipeline",
            # run in this checkout, as prefect.yaml's deployments do (a "path" would have Prefect copy the
            # whole folder, virtualenv included, into each run's temporary folder: minutes per run)
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}
            ],
            parameters=parameters,
            enforce_parameter_schema=False,
        )
    return str(deployment)


def create_zombie_automation(settings: Settings) -> str:
    """Prefect's documented way to mark a flow run whose process died: missed heartbeats -> Crashed."""
    from prefect.events.schemas.automations import AutomationCore

    finals = ["Completed", "Failed", "Cancelled", "Crashed"]
    automation = AutomationCore.model_validate(
        {
            "name": "crash-zombie-flow-runs",
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "match": {"prefect.resource.id": "prefect.flow-run.*"},
                "after": ["prefect.flow-run.heartbeat"],
                "expect": ["prefect.flow-run.heartbeat", *[f"prefect.flow-run.{s}" for s in finals]],
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": ZOMBIE_AFTER_S,
            },
            "actions": [
                {"type": "change-flow-run-state", "state": "CRASHED", "message": "no heartbeat: process died"}
            ],
        }
    )
    with prefect_api.client(settings.prefect_api_url) as prefect:
        return str(prefect.create_automation(automation))


def flow_run_state(settings: Settings, run_id: str) -> str:
    with prefect_api.client(settings.prefect_api_url) as prefect:
        return prefect_api.run_state(prefect, run_id)


def create_run(settings: Settings, deployment: str) -> str:
    with prefect_api.client(settings.prefect_api_url) as prefect:
        return prefect_api.create_run(prefect, UUID(deployment), {})


def start_worker(rig: Rig, key: str) -> None:
    worker = components(rig.settings)["worker"]
    env = {**worker.env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    command = [*worker.command[:4], WORK_POOL, *worker.command[5:-1], f"faults-{key}"]
    rig.supervisor.start(key, dataclasses.replace(worker, command=command, env=env))


def versions_of(settings: Settings) -> dict[str, dict[str, str]]:
    from flows.tracking import connect

    client = connect(settings)
    found = client.search_model_versions(f"name='{settings.model_name}'")
    return {str(v.version): dict(v.tags) for v in found}


def kill_prefect_worker(rig: Rig, run_timeout_s: float = 300) -> FaultResult:
    """SIGKILL a Prefect worker and its flow run right after it registered; crash, rerun, no duplicate."""
    from flows.tracking import alias_version, connect
    from models.registry import CHAMPION, Tag

    settings = rig.settings
    parameters = {
        "recipe": "hist_gradient_boosting",
        "gate_config": GATE.model_dump(),
        "deploy_target": "none",
    }
    deployment = create_deployment(settings, parameters)
    create_zombie_automation(settings)
    client = connect(settings)
    champion_before = alias_version(client, settings.model_name, CHAMPION)
    start_worker(rig, "worker-1")
    run_id = create_run(settings, deployment)

    def registered() -> bool:
        return any(t.get(Tag.FLOW_RUN) == run_id for t in versions_of(settings).values())

    wait_until("the run registering its version", registered, timeout_s=run_timeout_s, every_s=0.2)
    worker = rig.supervisor.processes.pop("worker-1")
    victims = [worker.pid, *descendants(worker.pid)]
    started = time.time()
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=10)
    versions_after_kill = versions_of(settings)
    champion_after_kill = alias_version(client, settings.model_name, CHAMPION)
    crashed_s = wait_until(
        "the server marking the run Crashed",
        lambda: flow_run_state(settings, run_id) == "CRASHED",
        timeout_s=ZOMBIE_AFTER_S + 90,
        every_s=1,
    )
    start_worker(rig, "worker-2")
    rerun = create_run(settings, deployment)
    final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    wait_until("the rerun finishing", lambda: flow_run_state(settings, rerun) in final, run_timeout_s, 1)
    assert flow_run_state(settings, rerun) == "COMPLETED", flow_run_state(settings, rerun)
    versions = versions_of(settings)
    champion = alias_version(client, settings.model_name, CHAMPION)
    mine = [v for v, t in versions.items() if t.get(Tag.FLOW_RUN) == run_id]
    assert len(versions) == len(versions_after_kill), (sorted(versions), sorted(versions_after_kill))
    assert mine and champion == mine[0], (mine, champion)
    assert versions[champion][Tag.GATE_VERDICT] == "passed"
    assert champion_after_kill in {champion_before, *mine}, champion_after_kill
    return FaultResult(
        "Prefect worker killed mid-run (SIGKILL)",
        started,
        time.time(),
        crashed_s,
        "kill -> server marks the run Crashed",
        f"killed after it registered v{mine[0]}; champion stayed v{champion_after_kill}; the rerun reused "
        f"v{mine[0]} (versions {len(versions_after_kill)} -> {len(versions)}) and promoted it",
    )


# --- accounting ------------------------------------------------------------------------------------------


def logged_request_ids(log_dir: Path) -> set[str]:
    from models.inference_records import read_records

    return {str(r["request_id"]) for r in read_records(log_dir)}


def account(results: list[FaultResult], outcomes: list[dict[str, Any]], logged: set[str]) -> None:
    """Each fault's share of the load: sent, failed, retried, not logged, and records lost."""
    for result in results:
        window = [o for o in outcomes if result.started <= o["started"] <= result.ended]
        result.sent = len(window)
        result.failed = sum(o["status"] != 200 for o in window)
        result.retried = sum(o.get("attempts", 1) > 1 for o in window)
        result.not_logged = sum(o.get("logged") is False for o in window)
        result.lost = sum(
            o["status"] == 200 and o.get("logged") is not False and o["request_id"] not in logged
            for o in window
        )


def whole_run(outcomes: list[dict[str, Any]], logged: set[str], began: float) -> FaultResult:
    total = FaultResult("whole run (all of the above, and between)", began, float("inf"), None, "", "")
    account([total], outcomes, logged)
    return total


@dataclass(frozen=True)
class Plan:
    registry_down_s: float
    retry_delay_s: float
    log_fault_s: float
    connections: int
    swap_poll_s: float
    prefect_worker: bool = True
    fail_closed: bool = True  # the log fault once more on a service that fails closed
    rate: float | None = None  # requests per second over all connections (open loop); None: back to back


def run_faults(rig: Rig, plan: Plan, body: dict[str, Any], workdir: Path) -> list[FaultResult]:
    """Every serving-side fault under one steady load; then the Prefect worker fault."""
    service = rig.service
    load = spawn_load(
        f"{service.url}/predict",
        body,
        workdir / "load.jsonl",
        3600,
        plan.connections,
        retries=1,
        rate=plan.rate,
    )
    began = time.time()
    results: list[FaultResult] = []
    try:
        time.sleep(3)
        faults: list[Callable[[], FaultResult]] = [
            lambda: kill_serving_worker(rig, body),
            lambda: broken_alias(rig, "corrupted"),
            lambda: broken_alias(rig, "missing"),
            lambda: log_unwritable(rig, plan.log_fault_s),
            lambda: registry_down(rig, plan.registry_down_s, plan.retry_delay_s),
        ]
        for fault in faults:
            results.append(fault())
            time.sleep(2)
        if plan.prefect_worker:
            results.append(kill_prefect_worker(rig))
    finally:
        outcomes = load.finish()
    logged = logged_request_ids(rig.settings.inference_log_dir)
    account(results, outcomes, logged)
    whole = whole_run(outcomes, logged, began)
    counted = int(metric(service.url, "mlops_inference_log_failures_total"))
    failures = [
        f"+{o['started'] - began:.1f}s: status {o['status']} after {o.get('attempts', 1)} attempts: "
        f"{(o['error'] or '')[:80]}"
        for o in outcomes
        if o["status"] != 200
    ]
    whole.notes = f"{counted} log write failures counted in all by mlops_inference_log_failures_total" + (
        "; failed: " + "; ".join(failures[:5]) if failures else ""
    )
    results.append(whole)
    if plan.fail_closed:
        results.append(log_unwritable_fail_closed(rig, plan, body, workdir))
    return results


def check(results: list[FaultResult]) -> list[str]:
    """The properties every fault must keep; empty when all hold."""
    problems = []
    closed = [r for r in results if r.fault == FAIL_CLOSED]
    for r in closed:  # its refusals are the policy; what it must never do is answer unlogged
        if r.failed == 0 or r.not_logged or r.lost:
            problems.append(f"{r.fault}: {r.failed} refused, {r.not_logged} unlogged, {r.lost} lost")
    results = [r for r in results if r.fault != FAIL_CLOSED]
    for r in results:
        if r.failed:  # the client's one retry covers a killed worker's connections
            problems.append(f"{r.fault}: {r.failed} failed requests")
        if r.lost:
            problems.append(f"{r.fault}: {r.lost} answered requests missing from the inference log")
    log_fault = next(r for r in results if r.fault.startswith("inference log"))
    if log_fault.not_logged == 0:
        problems.append("log fault: no answer said logged=false (the fault did not happen)")
    whole = results[-1]  # served = logged records + failures counted: nothing silently lost
    counted = int(whole.notes.split()[0])
    if whole.not_logged != counted:
        problems.append(f"{whole.not_logged} answers said not logged, {counted} failures counted")
    return problems


def table(results: list[FaultResult], plan: Plan) -> str:
    from importlib import metadata

    lines = [
        f"# Faults under steady load ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"bentoml {metadata.version('bentoml')}, 2 workers, alias poll {plan.swap_poll_s:g} s, tracking "
        "and registry on a real `mlflow server`, real Prefect server; steady single-row load from a "
        f"separate process ({plan.connections} connections, closed loop, one retry on a connection error "
        "after 0.1 s).",
        "",
        "`failed`: answered with an error or not at all after the retry; `retried`: connection errors the "
        "retry absorbed (a client without one counts them as failed); `not logged`: answered with "
        '`"logged": false` (the stated policy); `records lost`: answered and said logged, yet not in the '
        "inference log.",
        "",
        "| fault | requests sent | failed | retried | outage s | what is timed | not logged | records lost "
        "| what happened |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        outage = "" if r.outage_s is None else f"{r.outage_s:.1f}"
        lines.append(
            f"| {r.fault} | {r.sent:,} | {r.failed} | {r.retried} | {outage} | {r.outage} | {r.not_logged:,} "
            f"| {r.lost} | {r.notes} |"
        )
    return "\n".join(lines) + "\n"


def run(workdir: Path, plan: Plan) -> list[FaultResult]:
    settings = rig_settings(workdir, plan.swap_poll_s)
    os.environ.update(settings.to_env())
    os.environ["PREFECT_API_URL"] = settings.prefect_api_url  # before Prefect is imported
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with running_rig(settings, prefect=True) as rig:
        body = first_model(rig)
        return run_faults(rig, plan, body, workdir)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.md")
    parser.add_argument("--registry-down-s", type=float, default=60)
    parser.add_argument("--log-fault-s", type=float, default=10)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args(argv)
    plan = Plan(args.registry_down_s, 10, args.log_fault_s, args.connections, swap_poll_s=2.0)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        results = run(Path(tmp), plan)
    report = publish(table(results, plan), args.out)
    if problems := check(results):
        raise SystemExit("FAULT PROPERTIES VIOLATED:\n" + "\n".join(problems))
    return report


if __name__ == "__main__":
    main()
