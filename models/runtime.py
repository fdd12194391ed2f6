"""onnxruntime sessions configured the same way at gate time and at serve time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Single rows run faster on one thread, and each serving worker is its own process.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return options


def make_session(model: bytes | Path, arena: bool = True) -> ort.InferenceSession:
    """``arena=False`` for batches: onnxruntime's arena keeps the largest chunk's buffers for the session's
    life (a batch worker's peak memory); a serving worker's requests are small and reuse it."""
    source = str(model) if isinstance(model, Path) else model
    options = session_options()
    options.enable_cpu_mem_arena = arena
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class LatencyReport:
    """Per-call cost of one row: CPU time of the calling thread (what the gate judges) and wall time.

    With one intra-op thread onnxruntime computes in the calling thread, so its CPU time is the model's
    cost. Wall time adds whatever else the machine ran meanwhile: on two busy cores a 0.1 ms call now and
    then waits a scheduler slice (4-7 ms), which would fail a 5 ms p99 for a model that is not slow.
    """

    calls: int
    p50_ms: float
    p99_ms: float
    wall_p50_ms: float
    wall_p99_ms: float


def single_row_latency(
    session: ort.InferenceSession, feeds: dict[str, np.ndarray], calls: int = 300, warmup: int = 30
) -> LatencyReport:
    """Time ``session.run`` on one row at a time, cycling through the rows of ``feeds``."""
    rows = len(next(iter(feeds.values())))
    singles = [{name: value[i : i + 1] for name, value in feeds.items()} for i in range(rows)]
    for i in range(warmup):
        session.run(None, singles[i % rows])
    cpu, wall = np.empty(calls), np.empty(calls)
    for i in range(calls):
        started_cpu, started = time.thread_time_ns(), time.perf_counter_ns()
        session.run(None, singles[i % rows])
        wall[i] = time.perf_counter_ns() - started
        cpu[i] = time.thread_time_ns() - started_cpu
    p50, p99 = np.percentile(cpu / 1e6, [50, 99])
    wall_p50, wall_p99 = np.percentile(wall / 1e6, [50, 99])
    return LatencyReport(calls, float(p50), float(p99), float(wall_p50), float(wall_p99))
