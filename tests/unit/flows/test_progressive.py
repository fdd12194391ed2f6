"""The release flow's plan and its report without a server (the flow: tests/integration/test_release.py)."""

from __future__ import annotations

from flows.analysis import analyse
from flows.gate import LiveThresholds
from flows.progressive import Release, Window, phases
from models.registry import CANARY, SHADOW
from tests.unit.flows.test_analysis import champion_window, shadow_of


def test_each_strategy_is_its_windows_in_order() -> None:
    steps = [5.0, 25.0, 50.0, 100.0]
    assert phases("direct", steps) == []
    assert phases("shadow", steps) == [(SHADOW, 100.0)]
    assert phases("canary", steps) == [(CANARY, 5.0), (CANARY, 25.0), (CANARY, 50.0)]  # 100 %: promotion
    assert phases("shadow-then-canary", [10.0]) == [(SHADOW, 100.0), (CANARY, 10.0)]


def test_the_report_has_every_window_and_a_chart_per_series() -> None:
    window = champion_window()
    good, good_figures = analyse(window + shadow_of(window), "1", "2", SHADOW, LiveThresholds())
    bad, bad_figures = analyse(window + shadow_of(window, flip=True), "1", "2", SHADOW, LiveThresholds())
    release = Release("2", "1", "shadow", [Window(SHADOW, 100.0, 0, 1, good, good_figures),
                                           Window(SHADOW, 100.0, 1, 2, bad, bad_figures)])  # fmt: skip
    report = release.to_markdown("rolled_back")
    assert report.startswith("# Release v2 against v1 (shadow): rolled_back")
    assert "| shadow 100% | pass | 200 / 200 |" in report and "| shadow 100% | fail | 200 / 200 |" in report
    assert "- agreement: `" in report and "(1, 0)" in report  # agreement fell from 1 to 0
    failed = [row for row in release.table() if row["verdict"] == "fail"]
    assert {row["check"] for row in failed} == {"live.agreement", "live.probability_distance"}
