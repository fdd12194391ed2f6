"""The technical documentation and the reviewer's evidence are built from facts, not from blank templates."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import yaml

from flows.approval import evidence_markdown
from flows.card import (
    Event,
    Expectations,
    MonitoringPlan,
    Promotion,
    VersionFacts,
    description,
    expectations_of,
    gate_checks,
    iso,
    load_plan,
    parse_check,
    plan_from_config,
    render,
)
from flows.convert import ConvertResult
from flows.gate import ChampionScores, GateConfig, LiveThresholds, evaluate_gate
from flows.monitor import MonitorThresholds
from flows.tracking import PROJECT_ROOT
from models import datasets
from models.convert import ParityReport
from models.recipes import get_recipe
from models.registry import Tag
from models.runtime import LatencyReport

METRICS = {"accuracy": 0.96, "roc_auc": 0.99}
CHAMPION = ChampionScores("4", {"accuracy": 0.95, "roc_auc": 0.992})
CONVERSION = ConvertResult(
    "models:/m-9", ParityReport(143, True, 2e-16, 1e-5), None, 3709, LatencyReport(300, 0.06, 0.08, 0.07, 0.1)
)
GATE = evaluate_gate(METRICS, CONVERSION, CONVERSION.latency, CHAMPION, GateConfig())
# the version's tags as the stages write them (the gate's format: "<verdict>: <value> (threshold <t>)")
TAGS = {
    Tag.DATA_SOURCE: "demo:breast_cancer",
    Tag.DATA_DIGEST: "0123456789abcdef",
    Tag.DATA_ROWS: "569",
    Tag.DATA_VALIDATION: "94/94 expectations passed",
    Tag.RECIPE: "logistic_regression",
    Tag.GIT_COMMIT: "deadbeef",
    Tag.GATE_VERDICT: GATE.verdict,
    Tag.GATE_REASONS: "none",
    Tag.GATE_CHAMPION: "4",
    Tag.ONNX_PARITY: "passed",
    Tag.DEPLOYMENT_STATUS: "live",
    Tag.RELEASE_VERDICT: "promoted",
    **{
        Tag.gate_check(c.name): f"{'pass' if c.passed else 'fail'}: {c.value} (threshold {c.threshold})"
        for c in GATE.checks
    },
}
APPROVED = Promotion("approved", "ana", "better recall", "2026-12-01T10:00:00+00:00", None, "4")


def facts(promotion: Promotion | None = APPROVED, **changes: Any) -> VersionFacts:
    built = VersionFacts(
        model_name="bc",
        version="5",
        run_id="abc123",
        experiment_id="1",
        registered_at="2026-12-01T09:00:00+00:00",
        aliases=("champion",),
        live_history=("3", "4", "5"),
        generated_at="2026-12-02T08:00:00+00:00",
        event="its promotion by ana",
        tags=TAGS,
        params={
            "dataset": "breast_cancer",
            "estimator": "LogisticRegression",
            "train_rows": "426",
            "holdout_rows": "143",
            "model.C": "1.0",
            "model.max_iter": "2000",
        },
        metrics=METRICS,
        spec=datasets.BREAST_CANCER,
        recipe=get_recipe("logistic_regression"),
        inputs=(),
        expectations=(
            Expectations("expect_column_values_to_not_be_null", 31, 31),
            Expectations("expect_table_row_count_to_be_between", 1, 1),
        ),
        checks=gate_checks(TAGS),
        promotion=promotion,
        history=(
            Event("2026-12-01T09:00:00+00:00", "registered", "from training run abc123", "flow run f1"),
            Event(
                "2026-12-01T11:00:00+00:00",
                "release",
                "release (canary) against v4: rolled_back; "
                "failed: canary 5%: live.error_rate: 0.2000 (needs <= 0.0100)",
                "run r1",
            ),
            Event(
                "2026-12-03T07:00:00+00:00",
                "rollback",
                "rollback v5 -> v4 by rollback by bo: passed",
                "run r2",
            ),
        ),
        monitor_runs=(Event("2026-12-02T07:15:00+00:00", "monitor", "ok: none", "run m1"),),
        plan=MonitoringPlan(source="`prefect.yaml`"),
    )
    return replace(built, **changes)


def test_the_document_has_every_annex_iv_section_with_its_facts() -> None:
    text = render(facts())
    for section in (
        "1. Intended purpose",
        "2. Data and its validation",
        "3. Design choices",
        "4. Metrics and their limits",
        "5. Gate: passed",
        "6. Human oversight: approval and promotion",
        "7. Releases, rollbacks and champion moves",
        "8. Post-market monitoring plan",
        "9. Lineage",
    ):
        assert f"\n## {section}\n" in text, section
    assert text.startswith("# Technical documentation: bc v5\n")
    assert "generated 2026-12-02T08:00:00+00:00 after its promotion by ana" in text
    assert "`0123456789abcdef` (569 rows)" in text and "94/94 expectations passed" in text
    assert "426 training rows, 143 held-out rows" in text
    assert "| expect_column_values_to_not_be_null | 31/31 | none |" in text
    assert "| C | `1.0` |" in text and "`LogisticRegression`" in text
    assert "| accuracy | 0.9600 | higher |" in text
    assert "What they do not cover:" in text and "roc_auc is computed for two classes only" in text
    assert "| champion.accuracy | 0.9600 vs v4 0.9500 (delta +0.0100) | delta >= -0.01 | pass |" in text
    assert "| onnx.latency_p99 | 0.080 ms CPU (p50 0.060 ms" in text
    assert "- decision: approved by ana: better recall" in text
    assert "- forced: no" in text and "- replaced champion: v4" in text
    assert "- 2026-12-03T07:00:00+00:00: rollback v5 -> v4 by rollback by bo: passed" in text  # oversight
    assert "| 2026-12-01T11:00:00+00:00 | release | release (canary) against v4: rolled_back" in text
    assert "versions proven live, oldest first: v3, v4, **v5**" in text
    assert "| psi | `0.2` | Per-feature PSI above this is drift. |" in text
    assert "| min_requests | `20` | Requests the challenger must take per window. |" in text
    assert "| 2026-12-02T07:15:00+00:00 | ok: none | run m1 |" in text
    assert "MLflow run: `abc123`" in text and "git commit: `deadbeef`" in text


def test_without_a_decision_it_says_so_and_why_a_rejected_version_is_not_champion() -> None:
    rejected = {**TAGS, Tag.GATE_VERDICT: "rejected"}
    text = render(facts(None, tags=rejected, aliases=()))
    assert "- decision: none (not offered for promotion)" in text
    assert "only a person forcing it (`promotion.forced_by`) can promote it" in text
    assert "## 5. Gate: rejected" in text and "- status: aliases none; gate rejected" in text


def test_oversight_tells_automatic_forced_and_timed_out_decisions_apart() -> None:
    auto = render(facts(replace(APPROVED, by="pipeline (auto)", reason="passed the gate")))
    assert "no person approved it" in auto
    forced = render(facts(replace(APPROVED, by="cy", forced_by="cy")))
    assert "- forced: yes, by cy (the version had not passed the gate)" in forced
    timed_out = render(facts(replace(APPROVED, decision="rejected", by="timeout")))
    assert "no reviewer answered within the approval timeout" in timed_out


def test_the_validation_report_is_counted_by_expectation_with_its_failures() -> None:
    null, rows = "expect_column_values_to_not_be_null", "expect_table_row_count_to_be_between"
    report = {
        "dataset": "bc",
        "rows": 569,
        "outcomes": [
            {"expectation": null, "column": "a", "passed": True, "observed": ""},
            {"expectation": null, "column": "b", "passed": False, "observed": "10 unexpected (1.8%)"},
            {"expectation": rows, "column": None, "passed": True, "observed": "569"},
        ],
    }
    found = expectations_of(report)
    assert found == (
        Expectations(null, 1, 2, ("b: 10 unexpected (1.8%)",)),
        Expectations(rows, 1, 1),
    )
    text = render(facts(expectations=found))
    assert "| expect_column_values_to_not_be_null | 1/2 | b: 10 unexpected (1.8%) |" in text
    assert "holds no validation report" in render(facts(expectations=()))


def test_a_gate_tag_parses_back_into_value_and_threshold() -> None:
    check = parse_check("champion.accuracy", "fail: 0.9 vs v4 0.95 (delta -0.05) (threshold delta >= -0.01)")
    assert (check.verdict, check.value, check.threshold) == (
        "fail",
        "0.9 vs v4 0.95 (delta -0.05)",
        "delta >= -0.01",
    )
    assert [c.name for c in gate_checks(TAGS)] == sorted(c.name for c in GATE.checks)


def test_the_plan_is_the_one_prefect_yaml_deploys() -> None:
    plan = load_plan()
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    monitor = next(d for d in config["deployments"] if d["name"] == "monitor")["parameters"]
    assert plan.drift == MonitorThresholds(**monitor["thresholds"])
    assert plan.live == LiveThresholds(**config["definitions"]["classification_gate"]["live"])
    assert plan.monitor_schedule == "`15 * * * *` UTC" and plan.retrain is monitor["retrain"]
    changed = plan_from_config(
        {"deployments": [{"name": "monitor", "parameters": {"thresholds": {"psi": 0.35}, "retrain": False}}]},
        "a test",
    )
    text = render(facts(plan=changed))
    assert "| psi | `0.35` |" in text and "Thresholds as deployed in a test." in text
    assert "not scheduled" in text and "starts a retraining run" not in text


def test_the_description_summarises_verdict_decision_metrics_and_links_the_document() -> None:
    text = description(facts())
    assert "**Gate: passed**" in text
    assert "**Promotion: approved by ana at 2026-12-01T10:00:00+00:00: better recall**" in text
    assert "accuracy 0.9600 · roc_auc 0.9900" in text
    assert "Gate checks: 8/8 passed; failed: none" in text
    assert "[model_card.md](#/experiments/1/runs/abc123/artifacts/model_card.md)" in text
    assert "not offered for promotion" in description(facts(None))


def test_times_are_utc_to_the_second() -> None:
    assert iso(1_764_900_000_000) == "2025-12-05T02:00:00+00:00"
    assert iso("2026-12-04T22:30:00.123+01:00") == "2026-12-04T21:30:00+00:00"
    assert iso(None) == "unknown"


def test_evidence_shows_deltas_against_the_champion() -> None:
    text = evidence_markdown("bc", "5", METRICS, CHAMPION, "94/94 expectations passed", GATE)
    assert "| roc_auc | 0.9900 | 0.9920 | -0.0020 |" in text
    assert "**Gate:** passed" in text
    first = evidence_markdown("bc", "1", METRICS, None, "ok", GATE)
    assert "no champion yet" in first
