"""Benchmark: the monitor over a large inference-log window, streaming, against loading it all at once.

    python -m benchmarks.monitor --rows 1000000 --rows-per-request 10

Writes a synthetic log for the breast-cancer model (held-out rows resampled, a third of the window with
``mean_texture`` shifted by two standard deviations), then measures, in one run:

* the monitor (``flows.monitor.monitor_window``): wall time, rows/s, peak memory growth;
* the baseline a notebook would write: every record loaded into a pandas DataFrame, then PSI per feature.

Prints a Markdown table and writes it to ``benchmarks/results/monitor.md``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.monitor import MonitorThresholds, monitor_window
from flows.train import fit
from models import datasets
from models.inference_records import read_records
from models.profile import build_profile, psi
from serving.inference_log import InferenceLog

RESULTS = Path(__file__).with_name("results")


def write_log(directory: Path, split: datasets.Split, rows: int, per_request: int, seed: int = 0) -> float:
    """The log a busy service would leave; returns the first timestamp."""
    spec = split.spec
    pipeline = fit(split, "logistic_regression")
    rng = np.random.default_rng(seed)
    pool = split.x_holdout.reset_index(drop=True)
    labels = pipeline.predict(pool)
    probabilities = pipeline.predict_proba(pool)
    texture_sd = float(pool["mean_texture"].std())
    log = InferenceLog(directory, worker="bench")
    started = time.time()
    for index in range(0, rows, per_request):
        picked = rng.integers(0, len(pool), per_request)
        frame = pool.iloc[picked]
        inputs = {name: frame[name].to_numpy() for name in spec.feature_names}
        if index > rows * 2 // 3:
            inputs["mean_texture"] = inputs["mean_texture"] + 2 * texture_sd
        log.write(
            request_id=uuid.uuid4().hex,
            model="bench",
            version="1",
            run_id="bench",
            route="predict",
            latency_ms=0.3,
            inputs=inputs,
            outputs={"label": labels[picked], "probabilities": probabilities[picked]},
            rows=per_request,
        )
    log.close()
    return started


def measure(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run in a forked child: (result, wall seconds, how far its resident memory rose above its start)."""
    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)

    def child() -> None:
        start_rss = _status_mib("VmRSS")
        started = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - started
        sender.send((result, seconds, _status_mib("VmHWM") - start_rss))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    result, seconds, growth = receiver.recv()
    process.join()
    return result, seconds, growth


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def load_everything(directory: Path, profile: dict[str, Any], spec: datasets.DatasetSpec) -> dict[str, float]:
    """The naive way: all rows in memory, then PSI on the same bins."""
    rows = [
        {name: values[i] for name, values in record["inputs"].items()}
        for record in read_records(directory)
        for i in range(record["rows"])
    ]
    frame = pd.DataFrame(rows)
    scores = {}
    for feature in spec.feature_names:
        reference = profile["features"][feature]
        counts = np.bincount(
            np.searchsorted(reference["edges"], frame[feature].to_numpy(), side="right"),
            minlength=len(reference["edges"]) + 1,
        )
        scores[feature] = psi(np.asarray(reference["proportions"]), counts / counts.sum())
    return scores


def run_benchmark(rows: int, per_request: int, baseline: bool = True) -> dict[str, Any]:
    spec = datasets.BREAST_CANCER
    split = datasets.split(datasets.load_frame(datasets.demo_source(spec.name)), spec)
    pipeline = fit(split, "logistic_regression")
    profile = build_profile(split.x_train, spec, pipeline.predict(split.x_train))
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        started = write_log(directory, split, rows, per_request)
        size_mb = sum(p.stat().st_size for p in directory.iterdir()) / 2**20
        report, seconds, peak = measure(
            lambda: monitor_window(
                directory,
                model="bench",
                version="1",
                profile=profile,
                gate_metrics={},
                since=started - 1,
                until=time.time() + 1,
                thresholds=MonitorThresholds(),
            )
        )
        result: dict[str, Any] = {
            "rows": report.rows,
            "requests": report.requests,
            "log_mb": size_mb,
            "monitor_s": seconds,
            "monitor_peak_mb": peak,
            "drifted": report.drifted,
            "monitor_psi": {d.name: d.psi for d in report.features},
        }
        if baseline:
            scores, base_seconds, base_peak = measure(lambda: load_everything(directory, profile, spec))
            result |= {"baseline_s": base_seconds, "baseline_peak_mb": base_peak, "baseline_psi": scores}
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"# Monitor benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{platform.python_version()})",
        "",
        f"{result['rows']:,} rows in {result['requests']:,} requests, log {result['log_mb']:.0f} MiB; "
        f"drift found on: {', '.join(result['drifted']) or 'nothing'}.",
        "",
        "| reader | wall s | rows/s | peak RSS growth MiB |",
        "|---|---|---|---|",
        f"| monitor (streaming) | {result['monitor_s']:.1f} | {result['rows'] / result['monitor_s']:,.0f} | "
        f"{result['monitor_peak_mb']:.1f} |",
    ]
    if "baseline_s" in result:
        lines += [
            f"| load everything into pandas | {result['baseline_s']:.1f} | "
            f"{result['rows'] / result['baseline_s']:,.0f} | {result['baseline_peak_mb']:.1f} |",
            "",
            f"Ratio monitor / baseline: time {result['monitor_s'] / result['baseline_s']:.2f}, "
            f"peak memory {result['monitor_peak_mb'] / result['baseline_peak_mb']:.3f}.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-request", type=int, default=10)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    text = table(run_benchmark(args.rows, args.rows_per_request, baseline=not args.no_baseline))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "monitor.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
