"""Prometheus metrics of the serving process, shown on BentoML's ``/metrics`` (multiprocess mode)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class _Metrics:
    predictions: Histogram
    alias_events: Counter
    log_failures: Counter
    patches: Gauge
    shadow: Counter


@functools.cache
def _metrics() -> _Metrics:
    """Created on first use in the worker (BentoML sets up the multiprocess folder before that)."""
    return _Metrics(
        predictions=Histogram(
            "mlops_prediction_seconds",
            "Model time per request (validation, inference, logging), by route and served version.",
            ["route", "version"],
            buckets=LATENCY_BUCKETS,
        ),
        alias_events=Counter(
            "mlops_alias_events",
            "Alias follower events: swapped, swap_failed (old model kept), registry_error (kept serving).",
            ["event"],
        ),
        log_failures=Counter(
            "mlops_inference_log_failures", "Predictions served whose log record failed to write."
        ),
        patches=Gauge(
            "mlops_patch_applied",
            "1 if a fix to a third-party internal (serving/bentoml_fixes.py) is in place, 0 if not.",
            ["patch"],
            multiprocess_mode="livemin",  # 0 as soon as one live worker runs without it
        ),
        shadow=Counter(
            "mlops_shadow_requests",
            "Copies of answered requests for the shadow: mirrored (run and logged), failed (its error "
            "logged), dropped (the shadow's queue was full: never at the answered requests' expense).",
            ["outcome"],
        ),
    )


def observe(route: str, version: str, seconds: float) -> None:
    _metrics().predictions.labels(route=route, version=version).observe(seconds)


def alias_event(kind: str, _detail: str) -> None:
    _metrics().alias_events.labels(event=kind).inc()


def log_failure() -> None:
    _metrics().log_failures.inc()


def patch_applied(patch: str, applied: bool) -> None:
    _metrics().patches.labels(patch=patch).set(1 if applied else 0)


def shadow(outcome: str) -> None:
    _metrics().shadow.labels(outcome=outcome).inc()
