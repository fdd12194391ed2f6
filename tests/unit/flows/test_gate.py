from flows.convert import ConvertResult
from flows.gate import GateConfig, evaluate_gate
from models.convert import ParityReport

GOOD_METRICS = {"accuracy": 0.96, "roc_auc": 0.99, "log_loss": 0.1}
PARITY = ParityReport(rows=143, labels_identical=True, max_abs_diff=1e-12, tolerance=1e-5)
CONVERTED = ConvertResult(onnx_uri="models:/m-1", parity=PARITY, error=None, size_bytes=1000)


def test_a_good_model_passes_every_check() -> None:
    result = evaluate_gate(GOOD_METRICS, CONVERTED, GateConfig())
    assert result.passed
    assert result.reasons == []
    assert {row["check"] for row in result.table()} == {
        "metric.roc_auc",
        "metric.accuracy",
        "onnx.conversion",
        "onnx.parity",
    }


def test_a_metric_below_its_floor_fails_with_value_and_threshold() -> None:
    result = evaluate_gate({**GOOD_METRICS, "accuracy": 0.62}, CONVERTED, GateConfig())
    assert not result.passed
    assert result.reasons == ["metric.accuracy: 0.6200 (needs >= 0.9)"]


def test_ceilings_and_missing_metrics() -> None:
    config = GateConfig(metric_floors={"r2": 0.5}, metric_ceilings={"log_loss": 0.05})
    result = evaluate_gate(GOOD_METRICS, CONVERTED, config)
    assert result.reasons == ["metric.r2: missing (needs >= 0.5)", "metric.log_loss: 0.1000 (needs <= 0.05)"]


def test_parity_failure_and_failed_conversion_reject() -> None:
    drifted = ConvertResult(
        onnx_uri="models:/m-1",
        parity=ParityReport(rows=10, labels_identical=False, max_abs_diff=0.2, tolerance=1e-5),
        error=None,
        size_bytes=1,
    )
    assert [c.name for c in evaluate_gate(GOOD_METRICS, drifted, GateConfig()).checks if not c.passed] == [
        "onnx.parity"
    ]
    failed = ConvertResult(onnx_uri=None, parity=None, error="MissingShapeCalculator: X", size_bytes=0)
    result = evaluate_gate(GOOD_METRICS, failed, GateConfig())
    assert not result.passed
    assert "onnx.conversion: failed: MissingShapeCalculator: X" in result.reasons[0]


def test_no_checks_is_not_a_pass() -> None:
    from flows.gate import GateResult

    assert not GateResult().passed
