"""Rollout benchmark: alias swaps and automatic rollbacks under steady load, as shipped.

    uv run python -m benchmarks.rollout

A real ``bentoml serve`` (two workers, the shipped alias poll) takes steady single-row load from a separate
closed-loop process (``benchmarks.loadgen``, 4 connections) while the champion moves: a deploy, a manual
rollback and a deploy again (time from the alias move until every answer names the new version), then
three broken versions that the post-deploy checks roll back (time from the failed check until the previous
version serves and passes again, from the deployment audit). Every request is counted, and every failed one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.report import publish

RESULTS = Path(__file__).parent / "results"
FAULTS = ("unloadable", "wrong_outputs", "slow")


def swap_seconds(
    outcomes: list[dict[str, Any]], moved_at: float, old: str, until: float = float("inf")
) -> float | None:
    """From the alias move to the end of the last answer (sent before ``until``) naming the old version."""
    after = [o for o in outcomes if moved_at <= o["started"] <= until and o["status"] == 200]
    old_answers = [o["started"] + o["latency_ms"] / 1000 for o in after if o["version"] == old]
    if not after:
        return None
    return (max(old_answers) - moved_at) if old_answers else 0.0


class AliasWatch:
    """Reads the champion alias every ``every_s`` in a thread: when it moved, to within that interval."""

    def __init__(self, read: Callable[[], str], every_s: float = 0.05) -> None:
        self.read = read
        self.every_s = every_s
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="alias-watch", daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a busy store: the next read catches up
                version = self.read()
                if not self.seen or self.seen[-1][1] != version:
                    self.seen.append((time.time(), version))
            self._stop.wait(self.every_s)

    def __enter__(self) -> AliasWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def moved_to(self, version: str, after: float) -> float | None:
        """When the alias was first seen on ``version`` after ``after``."""
        return next((t for t, v in self.seen if t >= after and v == version), None)


def failed_between(outcomes: list[dict[str, Any]], start: float, end: float) -> tuple[int, int]:
    window = [o for o in outcomes if start <= o["started"] <= end]
    return len(window), sum(o["status"] != 200 for o in window)


def run(workdir: Path, slow_layers: int) -> list[dict[str, Any]]:
    os.environ.update({"MLOPS_STATE_DIR": str(workdir / "state")})
    from flows.processes import free_port

    os.environ["MLOPS_SERVE_PORT"] = str(free_port())
    from flows.cli import use_state_dir_for_prefect
    from models.settings import Settings

    settings = Settings()
    use_state_dir_for_prefect(settings)
    from flows import rollout
    from flows.checks import DeployChecks
    from flows.deploy import LocalService
    from flows.faults import register_broken_version
    from flows.gate import GateConfig
    from flows.release import promote_flow, rollback_flow
    from flows.tracking import connect
    from flows.training import training_pipeline
    from models import datasets
    from models.registry import CHAMPION

    # The load shares the two cores: latency budgets sized for it, as in the rollout tests.
    gate = GateConfig(max_regression={}, latency_p99_ms=50)
    checks = DeployChecks(
        probe_requests=50, probe_concurrency=2, latency_p99_ms=1000, bake_s=2, bake_p99_ms=2000
    )
    service = LocalService(settings)
    events: list[dict[str, Any]] = []
    load: subprocess.Popen[str] | None = None
    try:
        training_pipeline(gate_config=gate, deploy_checks=checks)  # v1, served
        training_pipeline(
            recipe="hist_gradient_boosting", gate_config=gate, deploy_target="none", promotion="none"
        )
        client = connect(settings)
        spec = datasets.BREAST_CANCER
        holdout = datasets.split(datasets.load_frame(datasets.demo_source(spec.name)), spec).holdout
        body, out, stop = workdir / "body.json", workdir / "load.jsonl", workdir / "stop"
        body.write_text(json.dumps({"records": datasets.records(holdout.head(1), spec)}))
        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.loadgen",
                "--url",
                f"{service.url}/predict",
                "--body",
                str(body),
                "--connections",
                "4",
                "--seconds",
                "900",
                "--out",
                str(out),
                "--stop-file",
                str(stop),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        swaps = [
            ("deploy v1 -> v2", "1", "2"),
            ("rollback v2 -> v1", "2", "1"),
            ("deploy v1 -> v2", "1", "2"),
        ]
        timeline: list[tuple[str, str, float, float]] = []
        name = settings.model_name
        with AliasWatch(lambda: str(client.get_model_version_by_alias(name, CHAMPION).version)) as champion:
            for label, old, new in swaps:
                began = time.time()
                if label.startswith("rollback"):
                    rollback_flow(requested_by="benchmark", reason="drill", deploy_checks=checks)
                else:
                    promote_flow(version=new, requested_by="benchmark", reason="drill", deploy_checks=checks)
                moved = champion.moved_to(new, began)
                if moved is None:
                    raise RuntimeError(f"{label}: the alias was never seen on version {new}")
                timeline.append((label, old, moved, time.time()))
                time.sleep(2)
        fault_windows: list[tuple[str, float, float, float | None]] = []
        for kind in FAULTS:
            broken = register_broken_version(client, settings, "2", kind, slow_layers=slow_layers)  # type: ignore[arg-type]
            began = time.time()
            with contextlib.suppress(rollout.DeploymentFailedError):
                promote_flow(version=broken, requested_by="benchmark", reason=kind, deploy_checks=checks)
            last = rollout.recent(client, settings, limit=1)[0]
            restore = float(last["restore_s"]) if last.get("restore_s") else None
            fault_windows.append((kind, began, time.time(), restore))
            time.sleep(2)
        stop.touch()
        load.communicate(timeout=120)
        outcomes = [json.loads(line) for line in out.read_text().splitlines()]
    finally:
        if load is not None and load.poll() is None:  # a failed run must not leave its load behind
            load.kill()
            load.wait()
        service.stop()
    for label, old, began, ended in timeline:
        sent, failed = failed_between(outcomes, began, ended + 2)
        events.append(
            {
                "event": label,
                "target_s": 2,
                "seconds": swap_seconds(outcomes, began, old, until=ended + 2),
                "what": "alias move -> every answer names the new version",
                "sent": sent,
                "failed": failed,
            }
        )
    for kind, began, ended, restore in fault_windows:
        sent, failed = failed_between(outcomes, began, ended + 2)
        events.append(
            {
                "event": f"fault {kind}: automatic rollback",
                "target_s": 10,
                "seconds": restore,
                "what": "failed check -> previous version serving and passing",
                "sent": sent,
                "failed": failed,
            }
        )
    events.append(
        {
            "event": "whole run",
            "target_s": None,
            "seconds": None,
            "what": "",
            "sent": len(outcomes),
            "failed": sum(o["status"] != 200 for o in outcomes),
        }
    )
    return events


def table(events: list[dict[str, Any]]) -> str:
    from importlib import metadata

    from models.settings import Settings

    poll_s = Settings.model_fields["swap_poll_s"].default
    lines = [
        f"# Rollout benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"bentoml {metadata.version('bentoml')}, 2 workers, alias poll {poll_s:g} s (as shipped); steady "
        "load from a separate process (4 connections, closed loop) on the same machine. Swaps are timed "
        "from the alias move (the registry read every 50 ms).",
        "",
        "| event | measured s | target s | what is timed | requests sent | failed |",
        "|---|---|---|---|---|---|",
    ]
    for e in events:
        seconds = "" if e["seconds"] is None else f"{e['seconds']:.2f}"
        target = "" if e["target_s"] is None else f"<= {e['target_s']}"
        lines.append(f"| {e['event']} | {seconds} | {target} | {e['what']} | {e['sent']:,} | {e['failed']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "rollout.md")
    parser.add_argument("--slow-layers", type=int, default=1300, help="size of the slow fault (Loop node)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        return publish(table(run(Path(tmp), args.slow_layers)), args.out)


if __name__ == "__main__":
    main()
