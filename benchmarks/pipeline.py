"""Pipeline benchmark: a warm run from data to served model, stage by stage, and the same on 1,000,000 rows.

    uv run python -m benchmarks.pipeline                 # demo data and 1,000,000 generated rows
    uv run python -m benchmarks.pipeline --rows 20000    # a smaller generated set (the test suite's)

Each measurement runs in its own process (so its peak memory is its own): one pipeline run to warm up
(imports, the temporary Prefect server), then the measured run. Stage times come from the Prefect task runs
of the measured flow run and the training run's ``fit_seconds`` metric; "Prefect" is what is left of the
wall time: flow and task orchestration, and the flow body between tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.report import publish

RESULTS = Path(__file__).parent / "results"
STAGES = ("validation", "training", "tracking", "conversion", "gate", "deploy", "Prefect")
# Task names of flows/training.py (and the release tasks it calls), grouped into the stages the table reports.
TASK_STAGE = {
    "validate_data": "validation",
    "train_model": "tracking",  # minus the fit, which is "training"
    "register_version": "tracking",
    "promote_version": "tracking",
    "write_model_card": "tracking",
    "convert_to_onnx": "conversion",
    "score_champion": "gate",
    "run_gate": "gate",
    "deploy_version": "deploy",
}


def generate(rows: int, path: Path, seed: int = 0) -> None:
    """Breast-cancer rows resampled with 1% multiplicative noise: the demo's shape at any size."""
    import numpy as np

    from models import datasets

    spec = datasets.BREAST_CANCER
    frame = datasets.load_frame(datasets.demo_source(spec.name))
    rng = np.random.default_rng(seed)
    sample = frame.sample(rows, replace=True, random_state=seed).reset_index(drop=True)
    features = list(spec.feature_names)
    sample[features] = sample[features] * rng.normal(1.0, 0.01, size=(rows, len(features)))
    sample.to_parquet(path, index=False)


def stage_times(flow_run_id: Any, fit_seconds: float, wall_s: float) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )

    times = dict.fromkeys(STAGES, 0.0)
    for task_run in asyncio.run(read()):
        name = task_run.name.rsplit("-", 1)[0]
        if name in TASK_STAGE and task_run.start_time and task_run.end_time:
            times[TASK_STAGE[name]] += (task_run.end_time - task_run.start_time).total_seconds()
    times["tracking"] -= fit_seconds
    times["training"] = fit_seconds
    times["Prefect"] = wall_s - sum(times.values())
    return times


def child(state: Path, data_source: str, port: int) -> dict[str, Any]:
    """One measured run (after a warm-up run in the same process); prints its figures as JSON."""
    os.environ.update({"MLOPS_STATE_DIR": str(state / "warm-up"), "MLOPS_SERVE_PORT": str(port)})
    from flows.cli import use_state_dir_for_prefect
    from models.settings import Settings

    use_state_dir_for_prefect(Settings())
    from flows.deploy import LocalService
    from flows.gate import GateConfig
    from flows.tracking import connect
    from flows.training import training_pipeline

    gate = GateConfig(latency_p99_ms=50)  # a busy 2-core machine must not fail the gate on latency
    training_pipeline(deploy_target="none", gate_config=gate)  # warm: imports, the Prefect server
    os.environ["MLOPS_STATE_DIR"] = str(state / "measured")
    settings = Settings()
    try:
        began = time.perf_counter()
        flow_state = training_pipeline(data_source=data_source, gate_config=gate, return_state=True)
        wall = time.perf_counter() - began
        result = flow_state.result()
        if result.served_url is None or result.run_id is None:
            raise RuntimeError(f"the measured run served nothing: {result}")
        fit = connect(settings).get_run(result.run_id).data.metrics["fit_seconds"]
        return {
            "wall_s": wall,
            "stages": stage_times(flow_state.state_details.flow_run_id, fit, wall),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "version": result.version,
        }
    finally:
        LocalService(settings).stop()


def measure(label: str, data_source: str, workdir: Path) -> dict[str, Any]:
    from flows.processes import free_port

    state = workdir / label
    command = [
        sys.executable,
        "-m",
        "benchmarks.pipeline",
        "--child",
        str(state),
        data_source,
        str(free_port()),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{label} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def table(results: dict[str, dict[str, Any]]) -> str:
    names = ("prefect", "mlflow", "scikit-learn", "skl2onnx", "great-expectations", "bentoml")
    lines = [
        f"# Pipeline benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        + ", ".join(f"{n} {metadata.version(n)}" for n in names)
        + ". Warm run (after one in the same process), data to served model, recipe logistic_regression, "
        "MLflow on SQLite, a temporary Prefect server, `bentoml serve` on loopback.",
        "",
        "| data | wall s | " + " | ".join(f"{s} s" for s in STAGES) + " | peak RSS MiB |",
        "|---|---|" + "---|" * len(STAGES) + "---|",
    ]
    for label, figures in results.items():
        stages = " | ".join(f"{figures['stages'][s]:.2f}" for s in STAGES)
        lines.append(f"| {label} | {figures['wall_s']:.1f} | {stages} | {figures['peak_rss_mib']:.0f} |")
    lines += [
        "",
        "Target: 30 s or less for the demo data. Stages: validation (load + Great Expectations), training "
        "(the fit), tracking (MLflow run, dataset inputs, model, registration, promotion, model card), "
        "conversion (skl2onnx + parity on the held-out rows), gate (champion scoring + checks), deploy "
        "(start or reuse the service, alias swap, post-deploy checks), Prefect (the rest of the wall time).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="size of the generated dataset")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline.md")
    parser.add_argument("--child", nargs=3, metavar=("STATE", "SOURCE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        state, source, port = args.child
        print(json.dumps(child(Path(state), source, int(port))))
        return ""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        workdir = Path(tmp)
        generated = workdir / f"breast-cancer-{args.rows}.parquet"
        generate(args.rows, generated)
        results = {
            "demo (569 rows)": measure("demo", "demo:breast_cancer", workdir),
            f"generated ({args.rows:,} rows)": measure("generated", str(generated), workdir),
        }
    return publish(table(results), args.out)


if __name__ == "__main__":
    main()
