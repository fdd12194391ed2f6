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


def make_session(model: bytes | Path) -> ort.InferenceSession:
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=session_options(), providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class LatencyReport:
    calls: int
    p50_ms: float
    p99_ms: float


def single_row_latency(
    session: ort.InferenceSession, feeds: dict[str, np.ndarray], calls: int = 300, warmup: int = 30
) -> LatencyReport:
    """Time ``session.run`` on one row at a time, cycling through the rows of ``feeds``."""
    rows = len(next(iter(feeds.values())))
    singles = [{name: value[i : i + 1] for name, value in feeds.items()} for i in range(rows)]
    for i in range(warmup):
        session.run(None, singles[i % rows])
    timings = np.empty(calls)
    for i in range(calls):
        started = time.perf_counter()
        session.run(None, singles[i % rows])
        timings[i] = time.perf_counter() - started
    p50, p99 = np.percentile(timings * 1000, [50, 99])
    return LatencyReport(calls=calls, p50_ms=float(p50), p99_ms=float(p99))
