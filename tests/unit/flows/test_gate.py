"""The gate's checks as pure functions: every check's pass and fail path, with values and thresholds."""

import pytest

from flows.convert import ConvertResult
from flows.gate import ChampionScores, GateConfig, GateResult, evaluate_gate
from models.convert import ParityReport
from models.runtime import LatencyReport

GOOD = {"accuracy": 0.96, "roc_auc": 0.99, "log_loss": 0.1, "f1": 0.95}
PARITY = ParityReport(rows=143, labels_identical=True, max_abs_diff=1e-12, tolerance=1e-5)
FAST = LatencyReport(calls=300, p50_ms=0.05, p99_ms=0.2, wall_p50_ms=0.06, wall_p99_ms=0.3)
CONVERTED = ConvertResult(onnx_uri="models:/m-1", parity=PARITY, error=None, size_bytes=1000, latency=FAST)


def gate(
    metrics: dict[str, float] = GOOD,
    conversion: ConvertResult = CONVERTED,
    champion: ChampionScores | None = None,
    **config: object,
) -> GateResult:
    return evaluate_gate(metrics, conversion, conversion.latency, champion, GateConfig(**config))  # type: ignore[arg-type]


def failed(result: GateResult) -> list[str]:
    return [c.name for c in result.checks if not c.passed]


def test_a_good_first_model_passes_every_check() -> None:
    result = gate()
    assert result.passed and result.verdict == "passed"
    assert [row["check"] for row in result.table()] == [
        "metric.roc_auc",
        "metric.accuracy",
        "champion.regression",
        "onnx.conversion",
        "onnx.parity",
        "onnx.size",
        "onnx.latency_p99",
    ]
    assert result.table()[2]["value"] == "no champion yet (first model)"


def test_metric_floor_and_ceiling() -> None:
    assert gate({**GOOD, "accuracy": 0.62}).reasons == ["metric.accuracy: 0.6200 (needs >= 0.9)"]
    result = gate(metric_floors={"r2": 0.5}, metric_ceilings={"log_loss": 0.05}, max_regression={})
    assert result.reasons == ["metric.r2: missing (needs >= 0.5)", "metric.log_loss: 0.1000 (needs <= 0.05)"]


def test_no_regression_against_the_champion_beyond_the_tolerance() -> None:
    champion = ChampionScores("3", {"accuracy": 0.97, "roc_auc": 0.991, "log_loss": 0.08})
    within = gate(champion=champion, max_regression={"accuracy": 0.02, "roc_auc": 0.005})
    assert within.passed
    assert within.table()[2]["value"] == "0.9600 vs v3 0.9700 (delta -0.0100)"
    beyond = gate(champion=champion, max_regression={"accuracy": 0.005, "log_loss": 0.01})
    assert failed(beyond) == ["champion.accuracy", "champion.log_loss"]
    assert beyond.checks[3].threshold == "delta <= +0.01"


def test_a_champion_that_cannot_be_scored_fails_the_comparison() -> None:
    champion = ChampionScores("3", {}, error="cannot score v3 on these rows: KeyError: 'plan'")
    assert failed(gate(champion=champion)) == ["champion.regression"]


def test_parity_size_and_latency_fail_paths() -> None:
    drifted = ConvertResult(
        "models:/m-1",
        ParityReport(10, labels_identical=False, max_abs_diff=0.2, tolerance=1e-5),
        None,
        10,
        FAST,
    )
    assert failed(gate(conversion=drifted)) == ["onnx.parity"]
    assert failed(gate(max_model_bytes=999)) == ["onnx.size"]
    assert failed(gate(latency_p99_ms=0.1)) == ["onnx.latency_p99"]


def test_failed_conversion_rejects_with_the_reason_not_a_traceback() -> None:
    failed_conversion = ConvertResult(None, None, "MissingShapeCalculator: no converter for X", 0, None)
    result = gate(conversion=failed_conversion)
    assert failed(result) == ["onnx.conversion", "onnx.latency_p99"]
    assert (
        result.reasons[0]
        == "onnx.conversion: failed: MissingShapeCalculator: no converter for X (needs converts)"
    )


def test_no_checks_is_not_a_pass() -> None:
    assert not GateResult().passed


def test_config_names_metrics_a_task_does_not_produce() -> None:
    config = GateConfig(metric_floors={"r2": 0.8}, max_regression={"roc_auc": 0.01})
    assert config.problems_for("regression") == [
        "metric 'roc_auc' is not computed for regression (expected one of ['mae', 'r2', 'rmse'])"
    ]
    assert "'r2'" in config.problems_for("classification")[0]


def test_config_refuses_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValueError, match="latency_budget"):
        GateConfig(latency_budget=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="parity_tolerance"):
        GateConfig(parity_tolerance=0)
