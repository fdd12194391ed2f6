"""Traffic roles benchmark: the canary's share and the shadow's cost, under steady load, as shipped.

    uv run python -m benchmarks.traffic

A real ``bentoml serve`` (two workers, the shipped alias poll) takes open-loop single-row load at a fixed
rate from a separate process (``benchmarks.loadgen``) while ``mlops split`` (``flows/split.py``) sets the
split phase by phase: the canary at 5, 25 and 50 % (requests per version, the share the canary answered
against the one asked for), and the shadow off, at 100 %, off and at 100 % again (answered requests' p50
and p99 with and without the copies, in the same run, alternated so that a drift of the machine falls on
both). Each phase is measured after every worker has applied its split (two polls and a second). Every
request is counted, and every failed one; the shadow's copies are counted from the inference log and the
service's ``mlops_shadow_requests`` metric (mirrored, failed, dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loadgen import spawn_load
from benchmarks.report import publish

RESULTS = Path(__file__).parent / "results"
CANARY_STEPS = (5.0, 25.0, 50.0)
SHADOW_PHASES = (0.0, 100.0, 0.0, 100.0)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def phase_row(outcomes: list[dict[str, Any]], start: float, end: float, canary: str) -> dict[str, Any]:
    window = [o for o in outcomes if start <= o["started"] < end]
    answered = [o for o in window if o["status"] == 200]
    versions = Counter(o["version"] for o in answered)
    latencies = [o["latency_ms"] for o in answered]
    return {
        "sent": len(window),
        "failed": len(window) - len(answered),
        "versions": dict(versions),
        "canary_share": 100.0 * versions.get(canary, 0) / len(answered) if answered else None,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "ids": [o["request_id"] for o in answered],
    }


def shadow_counts(url: str) -> dict[str, float]:
    """``mlops_shadow_requests`` by outcome, summed over the workers."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for outcome, value in re.findall(
        r'^mlops_shadow_requests_total\{outcome="(\w+)"\} ([0-9.e+]+)$', text, re.M
    ):
        counts[outcome] = counts.get(outcome, 0.0) + float(value)
    return counts


def run(workdir: Path, rate: float, phase_s: float) -> dict[str, Any]:
    os.environ.update({"MLOPS_STATE_DIR": str(workdir / "state")})
    from flows.processes import free_port

    os.environ["MLOPS_SERVE_PORT"] = str(free_port())
    from flows.cli import use_state_dir_for_prefect
    from models.settings import Settings

    settings = Settings()
    use_state_dir_for_prefect(settings)
    from flows import split
    from flows.checks import DeployChecks
    from flows.deploy import LocalService
    from flows.gate import GateConfig
    from flows.gateway import gateway
    from flows.training import training_pipeline
    from models import datasets
    from models.inference_records import read_records
    from models.registry import CANARY, SHADOW

    gate = GateConfig(max_regression={}, latency_p99_ms=50)  # the load shares the two cores
    checks = DeployChecks(
        probe_requests=50, probe_concurrency=2, latency_p99_ms=1000, bake_s=2, bake_p99_ms=2000
    )
    service = LocalService(settings)
    settle = settings.swap_poll_s * 2 + 1.0
    try:
        training_pipeline(gate_config=gate, deploy_checks=checks)  # v1, served
        for recipe in ("random_forest", "hist_gradient_boosting"):  # v2 the canary, v3 the shadow
            training_pipeline(recipe=recipe, gate_config=gate, deploy_target="none", promotion="none")
        registry = gateway(settings)
        spec = datasets.BREAST_CANCER
        holdout = datasets.split(datasets.load_frame(datasets.demo_source(spec.name)), spec).holdout
        body = {"records": datasets.records(holdout.head(1), spec)}
        phases = len(CANARY_STEPS) + len(SHADOW_PHASES)
        load = spawn_load(
            f"{service.url}/predict", body, workdir / "load.jsonl", seconds=phases * (phase_s + settle) + 400,
            connections=8, rate=rate,
        )  # fmt: skip
        windows: list[tuple[str, float, float, float]] = []  # role, share, start, end
        try:
            time.sleep(2)
            split.set_split(registry, by="benchmark", reason="canary", versions={CANARY: "2", SHADOW: "3"})
            for share in CANARY_STEPS:
                split.set_split(registry, by="benchmark", reason=f"canary {share:g}%", shares={CANARY: share})
                time.sleep(settle)
                windows.append((CANARY, share, time.time(), time.time() + phase_s))
                time.sleep(phase_s)
            split.set_split(registry, by="benchmark", reason="shadow only", shares={CANARY: 0.0})
            for share in SHADOW_PHASES:
                split.set_split(registry, by="benchmark", reason=f"shadow {share:g}%", shares={SHADOW: share})
                time.sleep(settle)
                windows.append((SHADOW, share, time.time(), time.time() + phase_s))
                time.sleep(phase_s)
            counts = shadow_counts(service.url)
            split.set_split(registry, by="benchmark", reason="the release drills", clear=True)
            drills = release_drills(settings, registry, checks, phase_s)
        finally:
            outcomes = load.finish()
        split.set_split(registry, by="benchmark", reason="done", clear=True)
        records = list(read_records(settings.inference_log_dir))
    finally:
        service.stop()
    copies = {r["request_id"] for r in records if r.get("role") == SHADOW and "error" not in r}
    rows = []
    for role, share, start, end in windows:
        row = phase_row(outcomes, start, end, canary="2")
        ids = row.pop("ids")
        row.update(role=role, share=share, copied=sum(i in copies for i in ids))
        rows.append(row)
    for drill in drills:
        window = [o for o in outcomes if drill["began"] <= o["started"] <= drill["ended"]]
        drill.update(
            sent=len(window),
            failed=sum(o["status"] != 200 for o in window),
            answered_by_it=sum(o["version"] == drill["version"] for o in window),
        )
    return {
        "drills": drills,
        "rows": rows,
        "rate": rate,
        "phase_s": phase_s,
        "sent": len(outcomes),
        "failed": sum(o["status"] != 200 for o in outcomes),
        "shadow_metric": counts,
        # answers the shadow (v3) gave during the phases (the good release drill then makes it champion)
        "shadow_answered": sum(r["versions"].get("3", 0) for r in rows),
    }


def release_drills(settings: Any, registry: Any, checks: Any, bake_s: float) -> list[dict[str, Any]]:
    """The release flow under the same load: a good version (v3) through shadow then canary 5/25/50 %, then
    a slow, a wrong and a broken copy of it as 25 % canaries; when each was out (share 0) or promoted."""
    from flows.faults import FaultKind, register_broken_version
    from flows.progressive import RELEASE_FAILED, ReleaseFailedError, Strategy, release_flow
    from flows.tracking import connect

    client = connect(settings)
    faults: tuple[FaultKind, ...] = ("slow", "wrong_outputs", "unloadable")
    plans: list[tuple[str, str, Strategy, list[float]]] = [
        ("good", "3", "shadow-then-canary", [5.0, 25.0, 50.0]),
        *[(kind, register_broken_version(client, settings, "3", kind), "canary", [25.0]) for kind in faults],
    ]
    drills: list[dict[str, Any]] = []
    for kind, version, strategy, steps in plans:
        began = time.time()
        try:
            release_flow(
                version=version, requested_by="benchmark", reason=kind, strategy=strategy, steps=steps,
                bake_s=bake_s, deploy_checks=checks,
            )  # fmt: skip
            verdict, failed = "promoted", ""
        except ReleaseFailedError:
            verdict, failed = "rolled back", str(registry.tags(version).get(RELEASE_FAILED, ""))
        drills.append(
            {"kind": kind, "version": version, "strategy": strategy, "steps": steps, "began": began,
             "ended": time.time(), "verdict": verdict, "failed_checks": failed}
        )  # fmt: skip
        time.sleep(2)
    return drills


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table(result: dict[str, Any]) -> str:
    from importlib import metadata

    from models.settings import Settings

    poll_s = Settings.model_fields["swap_poll_s"].default
    rows = result["rows"]
    off = [r for r in rows if r["role"] == "shadow" and r["share"] == 0]
    on = [r for r in rows if r["role"] == "shadow" and r["share"] > 0]
    p99_off = sum(r["p99_ms"] for r in off) / len(off)
    p99_on = sum(r["p99_ms"] for r in on) / len(on)
    lines = [
        f"# Traffic roles benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"bentoml {metadata.version('bentoml')}, 2 workers, alias poll {poll_s:g} s (as shipped). Open-loop "
        f"single-row `/predict` load at {result['rate']:g} req/s from a separate process on the same "
        f"machine; each phase {result['phase_s']:g} s, measured after every worker applied the split. "
        "Champion v1 (logistic regression), canary v2 (random forest), shadow v3 (histogram gradient "
        "boosting); the canary is chosen by a hash of each request's id.",
        "",
        "| phase | requests | failed | answered by v1 / v2 / v3 | canary answered % | p50 ms | p99 ms "
        "| copies the shadow logged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v = r["versions"]
        by_version = " / ".join(f"{v.get(k, 0):,}" for k in ("1", "2", "3"))
        share = "" if r["role"] == "shadow" else f"{r['canary_share']:.1f}"
        lines.append(
            f"| {r['role']} {r['share']:g} % | {r['sent']:,} | {r['failed']} | {by_version} | {share} "
            f"| {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {r['copied']:,} |"
        )
    lines += [
        "",
        f"Release drills (the `release` flow, bake window {result['phase_s']:g} s, alias poll {poll_s:g} s), "
        "under the same load. A slow canary holds the load generator's connections (its 8 connections wait "
        "on its answers), so fewer requests are sent in its window: none fails.",
        "",
        "| release | strategy | verdict | seconds from release to share 0 (or to champion) | requests "
        "| failed | answered by it | checks that failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in result["drills"]:
        answered = d["answered_by_it"] / d["sent"] * 100 if d["sent"] else 0.0
        steps = "/".join(f"{s:g}" for s in d["steps"])
        lines.append(
            f"| v{d['version']} {d['kind']} | {d['strategy']} {steps} % | {d['verdict']} "
            f"| {d['ended'] - d['began']:.1f} | {d['sent']:,} | {d['failed']} "
            f"| {d['answered_by_it']:,} ({answered:.1f} %) | {d['failed_checks'] or 'none'} |"
        )
    metric = result["shadow_metric"]
    lines += [
        "",
        f"Whole run: {result['sent']:,} requests, {result['failed']} failed, {result['shadow_answered']} "
        "answered by the shadow. Shadow p99 with / without copies (mean of the two phases each): "
        f"{p99_on:.2f} / {p99_off:.2f} ms = {p99_on / p99_off:.2f}x. `mlops_shadow_requests`: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(metric.items()))
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "traffic.md")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second, open loop")
    parser.add_argument("--phase-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-traffic-") as tmp:
        result = run(Path(tmp), args.rate, args.phase_seconds)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return publish(table(result), args.out)


if __name__ == "__main__":
    main()
