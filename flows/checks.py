"""Post-deploy health checks of one serving replica, each with a value, a threshold and a verdict."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

from models.inference_records import PROBE_HEADER


class DeployChecks(BaseModel):
    """Thresholds of the post-deploy checks (flow parameters; defaults in prefect.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ready_timeout_s: float = Field(default=60, gt=0, description="Each replica live and ready within this.")
    version_timeout_s: float = Field(
        default=60, gt=0, description="Each replica reports the version within this."
    )
    version_streak: int = Field(default=6, ge=1, description="Consecutive answers naming the version.")
    golden_tolerance: float = Field(default=1e-5, gt=0, description="Golden rows: max output difference.")
    probe_requests: int = Field(default=200, ge=10, description="Single-row requests in the latency probe.")
    probe_concurrency: int = Field(default=4, ge=1)
    latency_p99_ms: float = Field(default=100, gt=0, description="Probe p99, end to end over HTTP.")
    bake_s: float = Field(default=5, ge=0, description="Watch /metrics this long after the probe.")
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="5xx share of requests while baking.")
    bake_p99_ms: float = Field(default=250, gt=0, description="p99 request duration while baking (/metrics).")


@dataclass(frozen=True)
class CheckResult:
    replica: str
    name: str
    passed: bool
    value: str
    threshold: str
    seconds: float | None = None  # how long the check waited for its condition, where it waits

    def line(self) -> str:
        return f"{self.name} on {self.replica}: {self.value} (needs {self.threshold})"


@dataclass(frozen=True)
class Replica:
    """One serving endpoint, as a consumer would reach it."""

    url: str
    api_key: str | None = None
    verify: bool | str = True
    timeout_s: float = 10.0  # a check's request not answered within this is a latency failure

    def client(self, timeout_s: float | None = None) -> httpx.Client:
        headers = {PROBE_HEADER: "1"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        timeout = self.timeout_s if timeout_s is None else timeout_s
        return httpx.Client(base_url=self.url, headers=headers, verify=self.verify, timeout=timeout)


def _poll(deadline_s: float, attempt: Callable[[], bool]) -> float | None:
    """Seconds until ``attempt`` returned True, or None at the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        try:
            if attempt():
                return time.monotonic() - started
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    return None


def check_ready(replica: Replica, timeout_s: float) -> CheckResult:
    with replica.client(timeout_s=5) as client:
        waited = _poll(
            timeout_s,
            lambda: client.get("/livez").status_code == 200 and client.get("/readyz").status_code == 200,
        )
    value = (
        f"live and ready after {waited:.1f}s" if waited is not None else f"not ready after {timeout_s:.0f}s"
    )
    return CheckResult(replica.url, "ready", waited is not None, value, f"ready within {timeout_s:.0f}s")


def check_version(
    replica: Replica, model_name: str, version: str, timeout_s: float, streak: int
) -> CheckResult:
    """Poll model metadata until ``streak`` answers in a row (any worker) name the version."""
    seen: list[str] = []
    run = polls = 0

    with replica.client(timeout_s=5) as client:

        def reports_version() -> bool:
            nonlocal run, polls
            polls += 1
            # a new connection each time, so the polls reach every worker, not only the first one's
            answer = client.get(f"/v2/models/{model_name}", headers={"connection": "close"})
            # a 404: a worker that serves every model with a champion has not found this one yet
            served = (
                str(answer.json()["versions"][0])
                if answer.status_code == 200
                else f"none ({answer.status_code})"
            )
            seen.append(served)
            run = run + 1 if served == version else 0
            return run >= streak

        waited = _poll(timeout_s, reports_version)
    last = seen[-1] if seen else "nothing"
    # what the polls got, to tell a worker still on another version from a worker too busy to answer
    answered = ", ".join(f"v{v} x{n}" for v, n in Counter(seen).most_common())
    value = (
        f"v{version} after {waited:.1f}s"
        if waited is not None
        else f"still v{last} after {timeout_s:.0f}s ({len(seen)}/{polls} polls answered: {answered or '-'})"
    )
    return CheckResult(
        replica.url, "version", waited is not None, value, f"v{version} within {timeout_s:.0f}s"
    )


def _not_there_yet(response: httpx.Response, version: str) -> bool:
    # 503: the worker is loading; 404: it serves every model with a champion and has not found this one yet
    if response.status_code in (404, 503):
        return True
    if response.status_code != 200:
        return False
    return str(response.json().get("model_version")) != version


def predict_path(model_name: str) -> str:
    """The model's own named-feature route (``/predict`` answers for the service's default model only)."""
    return f"/v2/models/{model_name}/predict"


def check_golden(
    replica: Replica,
    model_name: str,
    golden: dict[str, Any],
    version: str,
    tolerance: float,
    loading_s: float = 0.0,
) -> CheckResult:
    """Send the golden rows recorded at gate time; answers must match them and name the version.

    A 503, a 404 or an answer from another version (a worker still loading, not past its alias poll, or
    not yet serving this model while the one the version check asked does) is asked again for up to
    ``loading_s``;
    any other answer is judged at once.
    """
    deadline, path = time.monotonic() + loading_s, predict_path(model_name)
    with replica.client() as client:
        response = client.post(path, json={"records": golden["records"]})
        while _not_there_yet(response, version) and time.monotonic() < deadline:
            time.sleep(0.2)
            response = client.post(path, json={"records": golden["records"]})
    if response.status_code != 200:
        return CheckResult(replica.url, "golden", False, f"HTTP {response.status_code}", "200, identical")
    body = response.json()
    predictions = body["predictions"]
    if "labels" in golden:
        got = np.array([list(p["probabilities"].values()) for p in predictions])
        diff = float(np.max(np.abs(got - np.asarray(golden["probabilities"]))))
        labels_match = [p["label"] for p in predictions] == golden["labels"]
    else:
        diff = float(
            np.max(np.abs(np.array([p["value"] for p in predictions]) - np.asarray(golden["values"])))
        )
        labels_match = True
    served = str(body["model_version"])
    passed = served == version and labels_match and diff <= tolerance
    value = f"v{served}, labels {'identical' if labels_match else 'differ'}, max diff {diff:.2e}"
    return CheckResult(replica.url, "golden", passed, value, f"v{version}, identical, <= {tolerance:g}")


def check_latency(
    replica: Replica, model_name: str, records: list[dict[str, Any]], checks: DeployChecks
) -> CheckResult:
    """A short closed-loop probe of single-row requests; p99 end to end."""
    share, extra = divmod(checks.probe_requests, checks.probe_concurrency)
    path = predict_path(model_name)

    def worker(offset: int) -> tuple[list[float], int]:
        timings, failures = [], 0
        with replica.client() as client:
            for i in range(share + (offset < extra)):  # exactly probe_requests in all
                started = time.perf_counter()
                response = client.post(path, json={"records": [records[(offset + i) % len(records)]]})
                timings.append((time.perf_counter() - started) * 1000)
                failures += response.status_code != 200
        return timings, failures

    with ThreadPoolExecutor(checks.probe_concurrency) as pool:
        results = list(pool.map(worker, range(checks.probe_concurrency)))
    timings = [t for r, _ in results for t in r]
    failures = sum(f for _, f in results)
    p99 = float(np.percentile(timings, 99))
    passed = failures == 0 and p99 <= checks.latency_p99_ms
    value = f"p99 {p99:.1f} ms over {len(timings)} requests, {failures} failed"
    return CheckResult(replica.url, "latency", passed, value, f"<= {checks.latency_p99_ms:g} ms, 0 failed")


@dataclass(frozen=True)
class TrafficSnapshot:
    requests: float
    errors: float
    buckets: dict[float, float]  # upper bound -> cumulative count of request durations


def traffic_snapshot(metrics_text: str) -> TrafficSnapshot:
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "bentoml_service_request_total":
                requests += sample.value
                errors += (
                    sample.value if str(sample.labels.get("http_response_code", "")).startswith("5") else 0
                )
            elif sample.name == "bentoml_service_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return TrafficSnapshot(requests, errors, buckets)


def bake_verdict(
    before: TrafficSnapshot, after: TrafficSnapshot, seconds: float, checks: DeployChecks
) -> CheckResult:
    """Error rate and p99 (bucket upper bound) of the requests served between two scrapes."""
    requests = after.requests - before.requests
    errors = after.errors - before.errors
    if requests <= 0:
        return CheckResult("", "bake", True, f"no traffic in {seconds:.0f}s", "error rate, p99")
    rate = errors / requests
    deltas = sorted(
        (bound, after.buckets.get(bound, 0) - before.buckets.get(bound, 0)) for bound in after.buckets
    )
    total = deltas[-1][1] if deltas else 0
    p99_s = next((bound for bound, count in deltas if total and count >= 0.99 * total), math.inf)
    passed = rate <= checks.max_error_rate and p99_s * 1000 <= checks.bake_p99_ms
    value = f"{requests:.0f} requests, error rate {rate:.2%}, p99 <= {p99_s * 1000:.0f} ms"
    threshold = f"<= {checks.max_error_rate:.0%} errors, p99 <= {checks.bake_p99_ms:g} ms"
    return CheckResult("", "bake", passed, value, threshold)


def check_bake(replica: Replica, checks: DeployChecks) -> CheckResult:
    with replica.client() as client:
        before = traffic_snapshot(client.get("/metrics").text)
        time.sleep(checks.bake_s)
        after = traffic_snapshot(client.get("/metrics").text)
    result = bake_verdict(before, after, checks.bake_s, checks)
    return CheckResult(replica.url, result.name, result.passed, result.value, result.threshold)


def verify_replica(
    replica: Replica, model_name: str, version: str, golden: dict[str, Any], checks: DeployChecks
) -> list[CheckResult]:
    """The checks in order; the first failure stops the rest (they would only repeat it)."""
    steps: list[tuple[str, Callable[[], CheckResult]]] = [
        ("ready", lambda: check_ready(replica, checks.ready_timeout_s)),
        ("version", lambda: check_version(
            replica, model_name, version, checks.version_timeout_s, checks.version_streak
        )),
        ("golden", lambda: check_golden(
            replica, model_name, golden, version, checks.golden_tolerance, checks.version_timeout_s
        )),
        ("latency", lambda: check_latency(replica, model_name, golden["records"], checks)),
        ("bake", lambda: check_bake(replica, checks)),
    ]  # fmt: skip
    results: list[CheckResult] = []
    for name, step in steps:
        try:
            result = step()
        except httpx.TimeoutException as exc:  # answered too slowly (or not at all): a latency failure
            value = f"the {name} check's request was not answered in time ({type(exc).__name__})"
            result = CheckResult(replica.url, "latency", False, value, f"<= {checks.latency_p99_ms:g} ms")
        except httpx.HTTPError as exc:
            result = CheckResult(replica.url, "reachable", False, f"{type(exc).__name__}: {exc}", "answers")
        results.append(result)
        if not result.passed:
            break
    return results
