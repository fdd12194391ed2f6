"""The traffic benchmark's accounting: a phase's versions, shares and percentiles; its table."""

from __future__ import annotations

from typing import Any

from benchmarks.traffic import percentile, phase_row, table


def outcome(started: float, version: str, status: int = 200, latency_ms: float = 1.0) -> dict[str, Any]:
    return {"started": started, "version": version, "status": status, "latency_ms": latency_ms,
            "request_id": f"r{started}"}  # fmt: skip


def test_a_phase_counts_its_own_requests_versions_and_failures() -> None:
    outcomes = [outcome(t / 10, "2" if t % 4 == 0 else "1", latency_ms=t) for t in range(100)]
    outcomes.append(outcome(5.0, "1", status=503))
    row = phase_row(outcomes, 2.0, 6.0, canary="2")
    assert row["sent"] == 41 and row["failed"] == 1  # started 2.0 up to (not with) 6.0, the 503 among them
    assert row["versions"] == {"1": 30, "2": 10} and row["canary_share"] == 25.0
    assert row["p50_ms"] == 40 and row["p99_ms"] == 59
    assert percentile([], 0.5) is None


def test_the_table_has_every_phase_and_drill_and_the_shadow_ratio() -> None:
    def row(role: str, share: float, p99: float) -> dict[str, Any]:
        copied = 100 if role == "shadow" and share else 0
        return {"role": role, "share": share, "sent": 100, "failed": 0, "versions": {"1": 75, "2": 25},
                "canary_share": 25.0, "p50_ms": 1.0, "p99_ms": p99, "copied": copied}  # fmt: skip

    drill = {"kind": "slow", "version": "4", "strategy": "canary", "steps": [25.0], "began": 0.0,
             "ended": 7.5, "verdict": "rolled back", "failed_checks": "canary 25%: live.p99_ms",
             "sent": 700, "failed": 0, "answered_by_it": 170}  # fmt: skip
    result = {"rows": [row("canary", 25, 2.0), row("shadow", 0, 2.0), row("shadow", 100, 3.0)],
              "drills": [drill], "rate": 500.0, "phase_s": 10.0, "sent": 1000, "failed": 0,
              "shadow_metric": {"mirrored": 100.0}, "shadow_answered": 0}  # fmt: skip
    text = table(result)
    assert "| canary 25 % | 100 | 0 | 75 / 25 / 0 | 25.0 | 1.00 | 2.00 | 0 |" in text
    assert "3.00 / 2.00 ms = 1.50x" in text and "mirrored 100" in text
    assert (
        "| v4 slow | canary 25 % | rolled back | 7.5 | 700 | 0 | 170 (24.3 %) | canary 25%: live.p99_ms |"
        in text
    )
