"""Soak: steady open-loop load for a long while, with deploys and rollbacks, watched every few seconds.

    uv run python -m benchmarks.soak                  # 30 minutes at 200 req/s, a swap every 150 s
    uv run python -m benchmarks.soak --minutes 3

A real ``bentoml serve`` (two workers, the shipped alias poll) takes single-row requests at a fixed rate
from a separate process (``benchmarks.loadgen --rate``: open loop, so a slow service does not slow the
load down). Every ``--swap-every-s`` the champion moves between two good versions through the real flows
(``promote``, then ``rollback``, with their post-deploy checks). Every ``--sample-s`` it records the RSS of
the whole server process tree and, per worker, open file descriptors (``/proc/<pid>/fd``) and threads
(``/proc/<pid>/status``); and each window's p99 from the load's own timings. At the end every answered
request is looked up in the inference log: one record per answer, none missing, none extra.

Verdicts: memory flat (last samples against the samples after the warm-up, within ``--max-rss-growth``),
p99 stable (the last third's median window p99 against the first third's), no fd or thread growth, log
complete, no failed request. Writes ``benchmarks/results/soak.md``; exits non-zero if a verdict fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.faults import descendants, serving_workers
from benchmarks.loadgen import spawn_load
from benchmarks.report import publish
from flows.checks import DeployChecks
from flows.deploy import LocalService
from flows.gate import GateConfig
from flows.processes import free_port
from models.settings import Settings

RESULTS = Path(__file__).parent / "results"
GATE = GateConfig(max_regression={}, latency_p99_ms=50)
CHECKS = DeployChecks(probe_requests=20, probe_concurrency=2, latency_p99_ms=1000, bake_s=2, bake_p99_ms=2000)


@dataclass(frozen=True)
class Bounds:
    max_rss_growth: float = 0.10  # the last samples against the samples right after the warm-up
    max_p99_ratio: float = 2.0  # the last third's median window p99 against the first third's
    max_fd_growth: int = 8  # per worker
    max_thread_growth: int = 4  # per worker


@dataclass(frozen=True)
class Sample:
    at: float  # epoch seconds
    rss_mib: float  # the whole server process tree
    fds: dict[int, int]  # worker pid -> open file descriptors
    threads: dict[int, int]  # worker pid -> threads


@dataclass(frozen=True)
class SoakPlan:
    seconds: float
    rate: float
    swap_every_s: float
    sample_s: float
    warmup_s: float
    connections: int = 16
    bounds: Bounds = field(default_factory=Bounds)


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def sample(service: LocalService) -> Sample:
    root = service.pid()
    assert root is not None, "the service stopped"
    rss_kib = 0
    for pid in [root, *descendants(root)]:
        with contextlib.suppress(OSError):
            rss_kib += _status(pid, "VmRSS")
    workers = serving_workers(service)
    return Sample(
        time.time(),
        rss_kib / 1024,
        {pid: sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()) for pid in workers},
        {pid: _status(pid, "Threads") for pid in workers},
    )


class Sampler:
    """Samples the service every ``every_s`` seconds in a thread until stopped."""

    def __init__(self, service: LocalService, every_s: float) -> None:
        self.service, self.every_s = service, every_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, AssertionError):
                self.samples.append(sample(self.service))
            if self._stop.wait(self.every_s):
                return

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)


def p99(latencies: list[float]) -> float | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def window_p99s(outcomes: list[dict[str, Any]], samples: list[Sample]) -> list[float | None]:
    """p99 (ms, from each request's scheduled time) of the requests sent in each sampling window."""
    edges = [s.at for s in samples]
    windows: list[list[float]] = [[] for _ in edges]
    for o in outcomes:
        index = next((i for i, edge in enumerate(edges) if o["started"] < edge), None)
        if index is not None and o["status"] == 200:
            windows[index].append(o["latency_ms"] + o.get("lag_ms", 0.0))
    return [p99(w) for w in windows]


def swap(version: str, previous: str, promote: bool) -> float:
    """The champion moved to ``version`` by the real flow, checks included; returns seconds taken."""
    from flows.release import promote_flow, rollback_flow

    began = time.monotonic()
    if promote:
        promote_flow(version=version, requested_by="soak", reason="soak swap", deploy_checks=CHECKS)
    else:
        rollback_flow(requested_by="soak", reason=f"soak back from v{previous}", deploy_checks=CHECKS)
    return time.monotonic() - began


def log_completeness(log_dir: Path, outcomes: list[dict[str, Any]]) -> dict[str, int]:
    """Answers (2xx) against the log's consumer records: missing, extra and duplicated request ids."""
    from models.inference_records import read_records

    answered = [o["request_id"] for o in outcomes if o["status"] == 200]
    records = Counter(
        r["request_id"] for r in read_records(log_dir) if not r.get("probe") and r["route"] == "predict"
    )
    return {
        "answered": len(answered),
        "records": sum(records.values()),
        "missing": sum(1 for rid in answered if rid not in records),
        "extra": len(set(records) - set(answered)),
        "duplicated": sum(1 for n in records.values() if n > 1),
    }


@dataclass
class SoakResult:
    plan: SoakPlan
    samples: list[Sample]
    p99s: list[float | None]
    swaps: list[tuple[float, str, float]]  # (epoch, what, seconds)
    sent: int
    failed: int
    max_lag_ms: float
    log: dict[str, int]
    verdicts: list[tuple[str, str, str, bool]] = field(default_factory=list)  # what, measured, bound, ok

    @property
    def passed(self) -> bool:
        return all(ok for *_, ok in self.verdicts)


def _after_warmup(result: SoakResult) -> list[Sample]:
    began = result.samples[0].at
    steady = [s for s in result.samples if s.at - began >= result.plan.warmup_s]
    return steady if len(steady) >= 3 else result.samples


def judge(result: SoakResult) -> SoakResult:
    bounds, steady = result.plan.bounds, _after_warmup(result)
    base_rss = statistics.median(s.rss_mib for s in steady[:3])
    end_rss = statistics.median(s.rss_mib for s in steady[-3:])
    growth = end_rss / base_rss - 1
    third = max(1, len(result.p99s) // 3)
    first = [p for p in result.p99s[:third] if p is not None]
    last = [p for p in result.p99s[-third:] if p is not None]
    ratio = statistics.median(last) / statistics.median(first) if first and last else float("inf")
    fd_growth = max(steady[-1].fds.get(pid, 0) - n for pid, n in steady[0].fds.items())
    thread_growth = max(steady[-1].threads.get(pid, 0) - n for pid, n in steady[0].threads.items())
    same_workers = set(steady[0].fds) == set(steady[-1].fds)
    log = result.log
    result.verdicts = [
        ("RSS, server tree (MiB)", f"{base_rss:.0f} -> {end_rss:.0f} ({growth:+.1%})",
         f"<= {bounds.max_rss_growth:+.0%}", growth <= bounds.max_rss_growth),
        ("p99 (ms), median window: first third -> last third",
         f"{statistics.median(first) if first else 0:.1f} -> {statistics.median(last) if last else 0:.1f} "
         f"(x{ratio:.2f})", f"<= x{bounds.max_p99_ratio:g}", ratio <= bounds.max_p99_ratio),
        ("open fds per worker, growth", f"{fd_growth:+d}", f"<= +{bounds.max_fd_growth}",
         fd_growth <= bounds.max_fd_growth and same_workers),
        ("threads per worker, growth", f"{thread_growth:+d}", f"<= +{bounds.max_thread_growth}",
         thread_growth <= bounds.max_thread_growth and same_workers),
        ("inference log: answers vs records", f"{log['answered']:,} answered, {log['records']:,} records, "
         f"{log['missing']} missing, {log['extra']} extra, {log['duplicated']} duplicated", "exact",
         log["missing"] == log["extra"] == log["duplicated"] == 0 and log["answered"] == log["records"]),
        ("failed requests", f"{result.failed} of {result.sent:,}", "0", result.failed == 0),
    ]  # fmt: skip
    return result


def soak(service: LocalService, body: dict[str, Any], versions: tuple[str, str], plan: SoakPlan,
         workdir: Path) -> SoakResult:  # fmt: skip
    """The load, the sampler and the swaps, for ``plan.seconds``; then the accounting."""
    total = int(plan.seconds * plan.rate) + 1
    load = spawn_load(
        f"{service.url}/predict", body, workdir / "soak.jsonl", plan.seconds + 60, plan.connections,
        rate=plan.rate, max_requests=total,
    )  # fmt: skip
    swaps: list[tuple[float, str, float]] = []
    began = time.monotonic()
    try:
        with Sampler(service, plan.sample_s).running() as sampler:
            current, other = versions
            next_swap = began + plan.swap_every_s
            while time.monotonic() - began < plan.seconds:
                if time.monotonic() >= next_swap:
                    promote = other == versions[1]
                    seconds = swap(other, current, promote)
                    swaps.append((time.time(), f"{'promote' if promote else 'rollback'} v{other}", seconds))
                    current, other = other, current
                    next_swap += plan.swap_every_s
                time.sleep(0.5)
    finally:
        outcomes = load.finish(timeout_s=plan.seconds + 120)
    return SoakResult(
        plan,
        sampler.samples,
        window_p99s(outcomes, sampler.samples),
        swaps,
        len(outcomes),
        sum(o["status"] != 200 for o in outcomes),
        max((o.get("lag_ms", 0.0) for o in outcomes), default=0.0),
        log_completeness(service.settings.inference_log_dir, outcomes),
    )


def prepare(settings: Settings) -> tuple[dict[str, Any], tuple[str, str]]:
    """v1 trained, promoted and served; v2 registered and passed, not promoted; a one-row body."""
    from flows.training import training_pipeline
    from models import datasets

    first = training_pipeline(gate_config=GATE, deploy_checks=CHECKS)
    second = training_pipeline(
        recipe="random_forest", gate_config=GATE, promotion="none", deploy_target="none"
    )
    assert (first.verdict, second.verdict) == ("champion", "challenger"), (first, second)
    spec = datasets.BREAST_CANCER
    holdout = datasets.split(datasets.load_frame(datasets.demo_source(spec.name)), spec).holdout
    body = {"records": datasets.records(holdout.head(1), spec)}
    assert first.version is not None and second.version is not None
    return body, (first.version, second.version)


def table(result: SoakResult) -> str:
    from importlib import metadata

    plan = result.plan
    lines = [
        f"# Soak ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"bentoml {metadata.version('bentoml')}, 2 workers; {plan.seconds / 60:g} minutes at "
        f"{plan.rate:g} req/s (open loop, {plan.connections} connections, a separate process, single rows on "
        f"/predict); champion moved every {plan.swap_every_s:g} s by the promote and rollback flows "
        f"({len(result.swaps)} swaps); sampled every {plan.sample_s:g} s; warm-up {plan.warmup_s:g} s. "
        f"Latency is timed from each request's scheduled send (max send lag {result.max_lag_ms:.0f} ms).",
        "",
        "| check | measured | bound | verdict |",
        "|---|---|---|---|",
        *[f"| {what} | {measured} | {bound} | {'pass' if ok else 'FAIL'} |"
          for what, measured, bound, ok in result.verdicts],
        "",
        "| t (s) | RSS MiB | fds per worker | threads per worker | window p99 ms | swap in window |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    began = result.samples[0].at if result.samples else 0.0
    previous = began
    for s, window_p99 in zip(result.samples, result.p99s, strict=True):
        swapped = ", ".join(f"{what} ({sec:.1f}s)" for at, what, sec in result.swaps if previous <= at < s.at)
        fds = "/".join(str(n) for n in s.fds.values())
        threads = "/".join(str(n) for n in s.threads.values())
        shown = "" if window_p99 is None else f"{window_p99:.1f}"
        lines.append(f"| {s.at - began:.0f} | {s.rss_mib:.0f} | {fds} | {threads} | {shown} | {swapped} |")
        previous = s.at
    return "\n".join(lines) + "\n"


def run(workdir: Path, plan: SoakPlan, swap_poll_s: float) -> SoakResult:
    settings = Settings(state_dir=workdir / "state", serve_port=free_port(), swap_poll_s=swap_poll_s)
    os.environ.update(settings.to_env())
    from flows.cli import use_state_dir_for_prefect

    use_state_dir_for_prefect(settings)
    service = LocalService(settings)
    try:
        body, versions = prepare(settings)
        return judge(soak(service, body, versions, plan, workdir))
    finally:
        service.stop()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.md")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=200, help="requests per second (open loop)")
    parser.add_argument("--swap-every-s", type=float, default=150)
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--warmup-s", type=float, help="default: the first swap cycle, at most 5 minutes")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    warmup = args.warmup_s if args.warmup_s is not None else min(2 * args.swap_every_s + 10, 300, seconds / 3)
    plan = SoakPlan(seconds, args.rate, args.swap_every_s, args.sample_s, warmup)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        result = run(Path(tmp), plan, swap_poll_s=2.0)
    report = publish(table(result), args.out)
    if not result.passed:
        raise SystemExit("SOAK VERDICT FAILED: " + "; ".join(w for w, _, _, ok in result.verdicts if not ok))
    return report


if __name__ == "__main__":
    main()
