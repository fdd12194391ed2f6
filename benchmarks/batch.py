"""Batch scoring benchmark: 10,000,000 rows of the demo schema through ``mlops batch-score``, against
onnxruntime in-process on the same rows, with the peak memory of the command's whole process tree.

    uv run python -m benchmarks.batch                      # 10,000,000 rows in 10 Parquet files
    uv run python -m benchmarks.batch --rows 1000000       # smaller

The champion is trained by the pipeline itself under a temporary Prefect server. The input is the demo's
rows resampled with 1% noise, written in row groups of 100,000. "in-process onnxruntime" reads the same
files first and then times only ``session.run``, in calls of 100,000 rows and of ``MODEL_CALL_ROWS`` (the
size batch scoring calls with; smaller calls keep the model's intermediate tensors in cache), on one
intra-op thread (as every worker runs) and on every core: the model's own cost with nothing around it; the
best of each is the ratio's base. The hand-written loop is what a user would write instead: read a row
group, run the model over it, in one process. Each ``mlops batch-score``
run is the command a user types, in its own process (a Dask cluster of 1 or 2 worker processes on this
machine); its time is the command's wall time from start to exit, cluster start-up, golden check, schema
check, skew report and MLflow record included; its memory is the peak of the summed RSS of the command and
all its children, sampled every 100 ms.
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
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.report import publish
from models.batch import MODEL_CALL_ROWS

RESULTS = Path(__file__).parent / "results"
CHUNK = 100_000
RSS_TARGET_MIB = 1536
RATIO_TARGET = 0.6


def generate(rows: int, files: int, folder: Path, seed: int = 0) -> list[Path]:
    """Demo rows resampled with 1% multiplicative noise, written a row group at a time (bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models import datasets

    spec = datasets.BREAST_CANCER
    frame = datasets.load_frame(datasets.demo_source(spec.name))
    rng = np.random.default_rng(seed)
    features = frame[spec.feature_names].to_numpy()
    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    per_file = rows // files
    for index in range(files):
        path = folder / f"part-{index:02d}.parquet"
        writer: pq.ParquetWriter | None = None
        left = per_file + (rows - per_file * files if index == files - 1 else 0)
        while left:
            n = min(CHUNK, left)
            values = features[rng.integers(0, len(features), n)] * rng.normal(
                1.0, 0.01, (n, len(spec.feature_names))
            )
            table = pa.table({name: values[:, j] for j, name in enumerate(spec.feature_names)})
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            left -= n
        assert writer is not None
        writer.close()
        paths.append(path)
    return paths


def _session(onnx: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])


def onnxruntime_rows_per_s(onnx: bytes, files: list[Path], threads: int, call_rows: int) -> float:
    """``session.run`` alone over every row, ``call_rows`` rows a call (each chunk read before its calls)."""
    import pyarrow.parquet as pq

    session = _session(onnx, threads)
    names = [i.name for i in session.get_inputs()]
    seconds, rows = 0.0, 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK, use_threads=False):
            feeds = {n: batch.column(n).to_numpy().reshape(-1, 1) for n in names}
            for start in range(0, batch.num_rows, call_rows):
                part = {n: v[start : start + call_rows] for n, v in feeds.items()}
                began = time.perf_counter()
                session.run(None, part)
                seconds += time.perf_counter() - began
            rows += batch.num_rows
    return rows / seconds


def handwritten_rows_per_s(onnx: bytes, files: list[Path], call_rows: int) -> float:
    """The loop a user would write instead, in one process on one thread: read each row group, run the
    model over it ``call_rows`` rows a call, keep the outputs in memory (no checks, no output file)."""
    import pyarrow.parquet as pq

    session = _session(onnx, 1)
    names = [i.name for i in session.get_inputs()]
    rows, began = 0, time.perf_counter()
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, use_threads=False)
            feeds = {n: table.column(n).to_numpy().reshape(-1, 1) for n in names}
            for start in range(0, table.num_rows, call_rows):
                session.run(None, {n: v[start : start + call_rows] for n, v in feeds.items()})
            rows += table.num_rows
    return rows / (time.perf_counter() - began)


class TreeMemory:
    """Peak of the summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(self.pid)
                total = 0
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += process.memory_info().rss
                self.peak = max(self.peak, total)
            self.stop.wait(self.interval_s)

    @contextlib.contextmanager
    def running(self) -> Iterator[TreeMemory]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            self.thread.join()


def batch_score(source: Path, output: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    mlops = Path(sys.executable).with_name("mlops")
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(mlops), "batch-score", str(source), str(output)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        with TreeMemory(process.pid).running() as memory:
            code = process.wait()
    wall = time.perf_counter() - began
    text = log.read_text(errors="replace")
    if code != 0:
        raise RuntimeError(f"mlops batch-score exited {code}:\n{text[-4000:]}")
    result: dict[str, Any] = json.loads(text[text.index("{\n") : text.rindex("\n}") + 2])
    return {"wall_s": wall, "peak_rss_mib": memory.peak / 2**20, **result}


def champion(env: dict[str, str], log: Path) -> None:
    """The pipeline trains, gates and registers the demo model (not deployed: nothing serves here)."""
    mlops = Path(sys.executable).with_name("mlops")
    done = subprocess.run(
        [str(mlops), "run", "--deploy", "none"], env=env, capture_output=True, text=True, check=False
    )
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"mlops run failed:\n{(done.stdout + done.stderr)[-4000:]}")


def champion_onnx(env: dict[str, str]) -> bytes:
    os.environ.update({k: v for k, v in env.items() if k.startswith("MLOPS_")})
    from flows.batch import load_version
    from flows.gateway import gateway
    from models.registry import CHAMPION
    from models.settings import Settings

    registry = gateway(Settings())
    version = registry.alias(CHAMPION)
    assert version is not None, "no champion"
    return load_version(registry, version).onnx


def report(
    rows: int,
    files: int,
    ort: dict[tuple[int, int], float],
    handwritten: float,
    runs: dict[int, dict[str, Any]],
) -> str:
    """The table: ``ort`` is session.run's rows/s by (intra-op threads, rows a call); each ratio is against
    the best of its kind in the same run."""
    cores = max(threads for threads, _ in ort)
    one = max(rate for (threads, _), rate in ort.items() if threads == 1)
    every = max(rate for (threads, _), rate in ort.items() if threads == cores)
    lines = [
        f"# Batch scoring benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores)",
        "",
        f"Command: `uv run python -m benchmarks.batch --rows {rows} --files {files}`. {rows:,} rows of the "
        f"demo schema (30 float64 features) in {files} Parquet files, scored by `mlops batch-score` with the "
        "pipeline's champion (logistic regression). Ratios, against the same run's figures: in-process "
        "onnxruntime `session.run` alone on rows already read (the best call size, one thread and every "
        "core), and the loop a user would write instead (read each row group, run the model; one process). "
        "Targets: peak RSS under 1.5 GiB, rows/s at least 0.6x in-process onnxruntime.",
        "",
        "| run | rows/s | vs `session.run`, 1 thread | vs `session.run`, all cores | vs hand-written loop "
        "| s | peak RSS MiB, process tree |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name: str, rate: float, seconds: float, rss: str) -> str:
        return (
            f"| {name} | {rate:,.0f} | {rate / one:.2f}x | {rate / every:.2f}x | {rate / handwritten:.2f}x "
            f"| {seconds:.1f} | {rss} |"
        )

    for (threads, call_rows), rate in sorted(ort.items()):
        name = f"in-process onnxruntime, {threads} thread(s), {call_rows:,} rows a call, `session.run` only"
        lines.append(row(name, rate, rows / rate, "-"))
    lines.append(row("hand-written loop: read a row group, `session.run`; 1 process, 1 thread", handwritten,
                     rows / handwritten, "-"))  # fmt: skip
    for workers, run in sorted(runs.items()):
        rss = f"{run['peak_rss_mib']:,.0f}"
        name = f"`mlops batch-score`, {workers} Dask worker(s)"
        scoring, wall = run["scoring_s"], run["wall_s"]
        lines.append(row(f"{name}: scoring (first file in to last out)", rows / scoring, scoring, rss))
        lines.append(row(f"{name}: the whole command", rows / wall, wall, rss))
    best = max(runs.values(), key=lambda r: rows / r["scoring_s"])
    rate = rows / best["scoring_s"]
    worst_rss = max(r["peak_rss_mib"] for r in runs.values())
    lines += [
        "",
        f"- scoring, best: {rate / one:.2f}x in-process `session.run` on one thread (target "
        f"{RATIO_TARGET}x), {rate / every:.2f}x on every core, {rate / handwritten:.2f}x the hand-written "
        "loop. Peak RSS of the "
        f"command's whole process tree (the command, its temporary Prefect server, the Dask workers) at most "
        f"{worst_rss:,.0f} MiB (target {RSS_TARGET_MIB}).",
        "- scoring also checks every row, writes the outputs with their provenance, samples for the skew "
        "report and hashes every input file (SHA-256); `session.run` counts only the model's calls on rows "
        "already read, and the hand-written loop reads and runs only.",
        "- the whole command also counts its start (imports, a temporary Prefect server, the Dask cluster), "
        "the golden-row check, the schema check of every file, the skew report and the MLflow record.",
        f"- rows quarantined: {', '.join(str(r['quarantined']) for r in runs.values())} (a clean input).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--workers", default="1,2", help="Dask worker processes, one run each")
    parser.add_argument("--out", type=Path, default=RESULTS / "batch.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "MLOPS_STATE_DIR": str(work / "state"),
            "OMP_NUM_THREADS": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        env.pop("PREFECT_API_URL", None)  # each command starts its own temporary server, as a user's does
        champion(env, work / "run.log")
        files = generate(args.rows, args.files, work / "in")
        onnx = champion_onnx(env)
        cores = os.cpu_count() or 1
        ort = {
            (threads, call_rows): onnxruntime_rows_per_s(onnx, files, threads, call_rows)
            for threads in sorted({1, cores})
            for call_rows in (CHUNK, MODEL_CALL_ROWS)
        }
        handwritten = handwritten_rows_per_s(onnx, files, MODEL_CALL_ROWS)
        runs = {}
        for workers in (int(w) for w in args.workers.split(",")):
            runs[workers] = batch_score(
                work / "in", work / f"out-{workers}", {**env, "MLOPS_BATCH_WORKERS": str(workers)},
                work / f"batch-{workers}.log",
            )  # fmt: skip
            if runs[workers]["scored"] != args.rows:
                raise RuntimeError(f"{workers} worker(s): scored {runs[workers]['scored']} of {args.rows}")
        publish(report(args.rows, args.files, ort, handwritten, runs), args.out)


if __name__ == "__main__":
    main()
