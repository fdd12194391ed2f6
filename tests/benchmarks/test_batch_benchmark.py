"""The batch benchmark's own code: its generated input, its memory sampler and its table (never timings)."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.batch import TreeMemory, generate, report
from models import datasets


def test_generated_input_has_every_row_in_bounded_row_groups(tmp_path: Path) -> None:
    files = generate(250_001, 2, tmp_path)
    counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
    assert counts == [125_000, 125_001]
    groups = [pq.ParquetFile(f).metadata.row_group(i).num_rows for f in files for i in range(2)]
    assert max(groups) <= 100_000
    assert pq.ParquetFile(files[0]).schema_arrow.names == datasets.BREAST_CANCER.feature_names


def test_the_memory_sampler_counts_the_children_too(tmp_path: Path) -> None:
    child = "b = bytearray(300 << 20); import time; time.sleep(1.5)"
    grow = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    process = subprocess.Popen([sys.executable, "-c", grow])
    with TreeMemory(process.pid, interval_s=0.05).running() as memory:
        process.wait(timeout=60)
    assert memory.peak > 300 << 20


def test_the_table_reports_ratios_against_the_same_runs_best_onnxruntime_and_hand_written_loop() -> None:
    ort = {
        (1, 100_000): 1_000_000.0,
        (1, 8192): 2_000_000.0,
        (2, 100_000): 4_000_000.0,
        (2, 8192): 3_000_000.0,
    }
    runs = {2: {"scoring_s": 10.0, "wall_s": 20.0, "peak_rss_mib": 1400.0, "quarantined": 0}}
    table = report(10_000_000, 10, ort, 500_000.0, runs)
    name = "| `mlops batch-score`, 2 Dask worker(s)"
    assert (
        f"{name}: scoring (first file in to last out) | 1,000,000 | 0.50x | 0.25x | 2.00x | 10.0 | 1,400 |"
        in table
    )
    assert f"{name}: the whole command | 500,000 | 0.25x | 0.12x | 1.00x | 20.0 | 1,400 |" in table
    assert "- scoring, best: 0.50x in-process `session.run` on one thread" in table
