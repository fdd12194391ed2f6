"""Memory of the serving tree: the arbiter and each worker, idle and after load, per model and version held.

    make bench-memory                        # about 3 minutes
    uv run python -m benchmarks.memory --seconds 5

Registers, through the real pipeline into a throwaway MLflow store, three models (the serving benchmark's
reference model, a random forest and a logistic regression on the same data, each its own registered model)
and three more versions of the first that passed the gate and hold no alias. Then starts ``bentoml serve``
(``LocalService``, as the pipeline does) in four shapes, one after another: one model with one worker, three
models with one worker, one model with three versions pinned by path (each asked for once) with one worker,
and one model with two workers (as shipped). In each: the resident memory of every process of the tree once
it is ready (idle), and again after ``--seconds`` of single-row ``/predict`` load at 8 connections (wrk).
What a model and a version cost is the worker's growth over the one-model worker, divided by how many were
added; what a worker costs is the two-worker tree over the one-worker tree. Also run at the end of
``benchmarks.serving``; writes ``benchmarks/results/memory.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import wrk
from benchmarks.report import publish

RESULTS = Path(__file__).parent / "results"
RECIPES = ("hist_gradient_boosting_scaled", "random_forest", "logistic_regression")  # the three models
PINNED = 3  # versions of the first model asked for by path
MIB = 1024.0


@dataclass(frozen=True)
class Shape:
    name: str
    models: int  # how many of the registered models the worker serves
    workers: int
    pinned: int = 0


SHAPES = (
    Shape("one model, 1 worker", 1, 1),
    Shape("three models, 1 worker", 3, 1),
    Shape(f"one model + {PINNED} versions by path, 1 worker", 1, 1, PINNED),
    Shape("one model, 2 workers (as shipped)", 1, 2),
)


@dataclass
class Sample:
    """The tree's processes at one moment: the arbiter's RSS and each worker's (MiB), and the rest."""

    arbiter: float
    workers: list[float]
    other: float = 0.0

    @property
    def tree(self) -> float:
        return self.arbiter + sum(self.workers) + self.other


@dataclass
class Measured:
    shape: Shape
    idle: Sample
    loaded: Sample
    rps: float = 0.0
    notes: list[str] = field(default_factory=list)


def process_table() -> list[tuple[int, int, int, str]]:
    """Every process: pid, parent pid, RSS in KiB, command line."""
    listed = subprocess.run(
        ["ps", "-o", "pid=,ppid=,rss=,args=", "-A"], capture_output=True, text=True, check=True
    ).stdout
    rows = []
    for line in listed.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3] if len(parts) > 3 else ""))
    return rows


def sample_tree(root: int, table: list[tuple[int, int, int, str]] | None = None) -> Sample:
    """The tree under ``root`` (``bentoml serve``, the arbiter): its workers by their command line."""
    rows = table if table is not None else process_table()
    wanted, changed = {root}, True
    while changed:
        changed = False
        for pid, parent, _, _ in rows:
            if parent in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    arbiter, workers, other = 0.0, [], 0.0
    for pid, _, rss, args in rows:
        if pid not in wanted:
            continue
        if pid == root:
            arbiter = rss / MIB
        elif "worker" in args:  # BentoML's worker processes: python -m _bentoml_impl.worker.service ...
            workers.append(rss / MIB)
        else:
            other += rss / MIB
    return Sample(arbiter, sorted(workers), other)


def register(state: Path) -> tuple[Any, list[str], list[str]]:
    """The store: three models with a champion each, and ``PINNED`` more versions of the first (gate passed,
    no alias). Returns the settings, the model names and the pinned versions."""
    os.environ["MLOPS_STATE_DIR"] = str(state)
    from flows.cli import use_state_dir_for_prefect
    from models.settings import Settings

    settings = Settings()
    use_state_dir_for_prefect(settings)
    from flows.gate import GateConfig
    from flows.training import training_pipeline

    gate = GateConfig(max_regression={}, latency_p99_ms=100)
    names = [settings.model_name, "memory-random-forest", "memory-logistic"]
    for name, recipe in zip(names, RECIPES, strict=True):
        result = training_pipeline(recipe=recipe, gate_config=gate, deploy_target="none", model_name=name)
        if result.verdict != "champion":
            raise RuntimeError(f"{name} did not become champion: {result}")
    pinned = []
    for _ in range(PINNED):
        result = training_pipeline(
            recipe=RECIPES[0], gate_config=gate, deploy_target="none", promotion="none"
        )
        if result.version is None or result.verdict != "challenger":
            raise RuntimeError(f"a version to pin did not pass its gate: {result}")
        pinned.append(result.version)
    from flows.tracking import connect
    from models.registry import CHALLENGER

    connect(settings).delete_registered_model_alias(names[0], CHALLENGER)  # the gate named the last one
    return settings, names, pinned


def measure(
    settings: Any, names: list[str], pinned: list[str], shape: Shape, seconds: float, workdir: Path
) -> Measured:
    from flows.deploy import LocalService
    from flows.processes import free_port
    from models import datasets

    spec = datasets.BREAST_CANCER
    row = datasets.records(datasets.load_frame(datasets.demo_source(spec.name)).tail(1), spec)[0]
    served = settings.model_copy(
        update={
            "serve_models": names[: shape.models],
            "serve_workers": shape.workers,
            "serve_port": free_port(),
        }
    )
    service = LocalService(served)
    service.start()
    try:
        service.wait_ready()
        pid = service.pid()
        assert pid is not None
        url = service.url
        for version in pinned[: shape.pinned]:  # one worker: each version loaded once, then held
            answer = httpx.post(
                f"{url}/v2/models/{names[0]}/versions/{version}/predict", json={"records": row}, timeout=60
            )
            answer.raise_for_status()
        index = httpx.post(f"{url}/v2/repository/index", timeout=10).json()
        held = len(index)
        expected = shape.models + shape.pinned
        notes = [] if held >= expected else [f"held {held} versions, expected {expected}"]
        time.sleep(1.0)
        idle = sample_tree(pid)
        body = workdir / "single.json"
        body.write_text(json.dumps({"records": row}))
        result = wrk.run(f"{url}/predict", body, 8, seconds, workdir)
        loaded = sample_tree(pid)
        return Measured(shape, idle, loaded, result.rps, notes)
    finally:
        service.stop()


def derived(measured: list[Measured]) -> dict[str, float]:
    """What a model, a pinned version and a worker cost: growth over the one-model, one-worker shape."""
    by = {m.shape.name: m for m in measured}
    base = by[SHAPES[0].name]
    models, pins, two = by[SHAPES[1].name], by[SHAPES[2].name], by[SHAPES[3].name]

    def worker(m: Measured, when: str) -> float:
        sample: Sample = getattr(m, when)
        return sum(sample.workers)

    return {
        "model_idle": (worker(models, "idle") - worker(base, "idle")) / (models.shape.models - 1),
        "model_loaded": (worker(models, "loaded") - worker(base, "loaded")) / (models.shape.models - 1),
        "version_idle": (worker(pins, "idle") - worker(base, "idle")) / pins.shape.pinned,
        "version_loaded": (worker(pins, "loaded") - worker(base, "loaded")) / pins.shape.pinned,
        "worker_idle": two.idle.tree - base.idle.tree,
        "worker_loaded": two.loaded.tree - base.loaded.tree,
    }


def table(measured: list[Measured], seconds: float) -> str:
    lines = [
        "## Memory of the serving tree (RSS, MiB)",
        "",
        f"`python -m benchmarks.memory --seconds {seconds:g}`; after load: {seconds:g} s of single-row "
        "`/predict` at 8 connections (wrk). Workers' figures are each worker's.",
        "",
        "| shape | arbiter | workers idle | tree idle | workers after load | tree after load | req/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in measured:
        workers_idle = " / ".join(f"{w:.0f}" for w in m.idle.workers)
        workers_loaded = " / ".join(f"{w:.0f}" for w in m.loaded.workers)
        note = f" ({'; '.join(m.notes)})" if m.notes else ""
        lines.append(
            f"| {m.shape.name}{note} | {m.idle.arbiter:.0f} | {workers_idle} | {m.idle.tree:.0f} | "
            f"{workers_loaded} | {m.loaded.tree:.0f} | {m.rps:,.0f} |"
        )
    cost = derived(measured)
    lines += [
        "",
        "| what it costs | idle | after load |",
        "|---|---|---|",
        f"| each model served beyond the first, per worker | {cost['model_idle']:.1f} | "
        f"{cost['model_loaded']:.1f} |",
        f"| each version held by path, per worker | {cost['version_idle']:.1f} | "
        f"{cost['version_loaded']:.1f} |",
        f"| each worker (two-worker tree minus one-worker tree) | {cost['worker_idle']:.0f} | "
        f"{cost['worker_loaded']:.0f} |",
        "",
    ]
    return "\n".join(lines)


def run(seconds: float, workdir: Path) -> str:
    settings, names, pinned = register(workdir / "state")
    measured = [measure(settings, names, pinned, shape, seconds, workdir) for shape in SHAPES]
    return table(measured, seconds)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10, help="load per shape")
    args = parser.parse_args(argv)
    if not wrk.available():
        raise SystemExit("wrk is not installed: make tools")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        return publish(run(args.seconds, Path(folder)), RESULTS / "memory.md")


if __name__ == "__main__":
    main()
