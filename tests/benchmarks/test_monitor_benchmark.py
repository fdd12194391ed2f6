"""The monitor benchmark's own code on a short run: it reads every row, finds the injected drift, and its
streaming reader agrees with the load-everything baseline."""

import pytest

from benchmarks.monitor import run_benchmark, table


def test_short_run_reads_every_row_and_agrees_with_the_baseline() -> None:
    result = run_benchmark(rows=20_000, per_request=10)
    assert result["rows"] == 20_000 and result["requests"] == 2_000
    assert result["drifted"] == ["mean_texture"]
    assert result["monitor_psi"] == pytest.approx(result["baseline_psi"])  # same bins, same rows, same PSI
    assert max(result["baseline_psi"], key=result["baseline_psi"].get) == "mean_texture"
    text = table(result)
    assert "| monitor (streaming) |" in text and "| load everything into pandas |" in text
