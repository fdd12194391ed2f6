"""A release window's analysis on synthetic inference-log windows: each check's pass and its fail."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flows.analysis import analyse, split_window
from flows.gate import LiveThresholds
from models.registry import CANARY, SHADOW

LIVE = LiveThresholds()
RNG = np.random.default_rng(7)


def answer(
    request_id: str, version: str, label: int, p: float, latency_ms: float = 1.0, role: str | None = None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "request_id": request_id, "ts": 1.0, "version": version, "route": "infer", "rows": 1,
        "latency_ms": latency_ms, "inputs": {"x": [0.0]},
        "outputs": {"label": [label], "probabilities": [[1 - p, p]]},
    }  # fmt: skip
    if role is not None:
        record["role"] = role
    return record


def error(request_id: str, version: str, role: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"request_id": request_id, "ts": 1.0, "version": version, "route": "infer",
                              "rows": 0, "status": 500, "error": "boom"}  # fmt: skip
    if role is not None:
        record["role"] = role
    return record


def champion_window(n: int = 200) -> list[dict[str, Any]]:
    probabilities = RNG.uniform(0, 1, n)
    return [answer(f"r{i}", "1", int(p > 0.5), float(p), float(RNG.uniform(0.5, 1.5))) for i, p in
            enumerate(probabilities)]  # fmt: skip


def shadow_of(window: list[dict[str, Any]], **change: Any) -> list[dict[str, Any]]:
    """The shadow's copies of the champion's answers, changed as asked."""
    copies = []
    for record in window:
        p = record["outputs"]["probabilities"][0][1]
        if change.get("flip"):
            p = 1 - p
        p = min(1.0, p + change.get("shift", 0.0))
        copies.append(answer(record["request_id"], "2", int(p > 0.5), p,
                             change.get("latency_ms", record["latency_ms"]), role=SHADOW))  # fmt: skip
    return copies


def verdicts(records: list[dict[str, Any]], role: str) -> dict[str, bool]:
    result, _ = analyse(records, "1", "2", role, LIVE)
    return {check.name: check.passed for check in result.checks}


def test_a_shadow_that_answers_as_the_champion_passes_every_check() -> None:
    window = champion_window()
    checks = verdicts(window + shadow_of(window), SHADOW)
    assert checks == {
        "live.requests": True, "live.error_rate": True, "live.p99_ms": True, "live.agreement": True,
        "live.probability_distance": True, "live.prediction_psi": True, "live.quality": True,
    }  # fmt: skip


def quality(records: list[dict[str, Any]], labels: dict[tuple[str, int], Any]) -> tuple[bool, str]:
    result, _ = analyse(records, "1", "2", SHADOW, LIVE, labels)
    check = next(c for c in result.checks if c.name == "live.quality")
    return check.passed, check.value


def test_live_quality_from_feedback_labels_judges_the_challenger_against_the_champion() -> None:
    window = champion_window()
    truth = {(r["request_id"], 0): r["outputs"]["label"][0] for r in window}  # the champion is always right
    assert quality(window + shadow_of(window), {}) == (True, "not judged: 0 labelled rows")
    assert quality(window + shadow_of(window), truth)[0] is True
    passed, value = quality(window + shadow_of(window, flip=True), truth)  # the challenger always wrong
    assert not passed and value == "accuracy 0.0000 (champion 1.0000)"
    few = dict(list(truth.items())[: LIVE.min_labels - 1])
    assert quality(window + shadow_of(window, flip=True), few) == (
        True,
        f"not judged: {LIVE.min_labels - 1} labelled rows",
    )


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"flip": True}, {"live.agreement", "live.probability_distance"}),
        ({"shift": 0.3}, {"live.agreement", "live.probability_distance", "live.prediction_psi"}),
        ({"latency_ms": 180.0}, {"live.p99_ms"}),
    ],
)
def test_a_shadow_that_differs_fails_the_checks_that_see_it(change: dict[str, Any], failed: set[str]) -> None:
    window = champion_window()
    checks = verdicts(window + shadow_of(window, **change), SHADOW)
    assert {name for name, passed in checks.items() if not passed} == failed


def test_a_canary_is_judged_on_its_own_requests() -> None:
    window = champion_window(300)
    canary = [answer(f"c{i}", "2", int(p > 0.5), float(p), role=CANARY) for i, p in
              enumerate(RNG.uniform(0, 1, 150))]  # fmt: skip
    assert all(verdicts(window + canary, CANARY).values())
    assert "live.agreement" not in verdicts(window + canary, CANARY)  # different requests: no join

    few = verdicts(window + canary[:5], CANARY)
    assert few["live.requests"] is False  # too little evidence (a canary that never loaded answers none)
    nothing = verdicts(window, CANARY)
    assert nothing["live.requests"] is False and nothing["live.p99_ms"] is False

    failing = canary[:50] + [error(f"e{i}", "2", role=CANARY) for i in range(5)]
    assert verdicts(window + failing, CANARY)["live.error_rate"] is False  # 9 % against 0 %
    slow = [{**r, "latency_ms": 180.0} for r in canary]
    assert verdicts(window + slow, CANARY)["live.p99_ms"] is False
    skewed = [answer(f"s{i}", "2", 1, 0.9, role=CANARY) for i in range(150)]  # always the same label
    assert verdicts(window + skewed, CANARY)["live.prediction_psi"] is False
    result, _ = analyse(window + skewed[:60], "1", "2", CANARY, LIVE)  # too few rows to tell: not judged
    psi_check = next(c for c in result.checks if c.name == "live.prediction_psi")
    assert psi_check.passed and psi_check.value == "not judged: 60 rows"
    assert "live.input_psi" not in {c.name for c in result.checks}

    # the canary's requests are a fair sample of the traffic only if their inputs look like the champion's
    spread = [{**r, "inputs": {"x": [float(RNG.uniform(0, 1))]}} for r in window]
    same = [{**r, "inputs": {"x": [float(RNG.uniform(0, 1))]}} for r in canary]
    apart = [{**r, "inputs": {"x": [float(RNG.uniform(0.7, 1.7))]}} for r in canary]
    assert verdicts(spread + same, CANARY)["live.input_psi"] is True
    assert verdicts(spread + apart, CANARY)["live.input_psi"] is False


def test_only_consumers_requests_of_each_role_count() -> None:
    window = champion_window(50)
    probes = [{**r, "probe": True, "version": "2", "role": CANARY} for r in champion_window(30)]
    pinned = [answer("pinned", "2", 1, 0.9)]  # version 2 asked for by path: no role
    shadow_copies = shadow_of(window)
    ours, theirs = split_window(window + probes + pinned + shadow_copies, "1", "2", CANARY)
    assert (ours.requests, theirs.requests) == (50, 0)
    ours, theirs = split_window(window + probes + pinned + shadow_copies, "1", "2", SHADOW)
    assert (ours.requests, theirs.requests) == (50, 50)


def test_a_regression_agrees_within_its_relative_tolerance() -> None:
    def value(request_id: str, version: str, v: float, role: str | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "request_id": request_id,
            "ts": 1.0,
            "version": version,
            "route": "infer",
            "rows": 1,
            "latency_ms": 1.0,
            "inputs": {},
            "outputs": {"variable": [v]},
        }
        if role:
            record["role"] = role
        return record

    values = RNG.uniform(10, 20, 100)
    window = [value(f"r{i}", "1", float(v)) for i, v in enumerate(values)]
    close = [value(f"r{i}", "2", float(v) * 1.02, SHADOW) for i, v in enumerate(values)]
    far = [value(f"r{i}", "2", float(v) * 1.5, SHADOW) for i, v in enumerate(values)]
    assert all(verdicts(window + close, SHADOW).values())
    failed = {n for n, ok in verdicts(window + far, SHADOW).items() if not ok}
    assert failed == {"live.agreement", "live.prediction_psi"}
