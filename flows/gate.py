"""The promotion gate: evaluation checks on a candidate version, each with value, threshold, verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from flows.convert import ConvertResult
from models.datasets import Task
from models.metrics import HIGHER_IS_BETTER, TASK_METRICS
from models.registry import CHALLENGER, Tag
from models.runtime import LatencyReport


class LiveThresholds(BaseModel):
    """What a challenger must show in each release window (``GateConfig.live``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_requests: int = Field(default=20, ge=1, description="Requests the challenger must take per window.")
    max_error_rate_increase: float = Field(default=0.01, ge=0, description="Over the champion's error rate.")
    max_p99_ratio: float = Field(default=2.0, ge=1, description="Challenger p99 / champion p99, at most.")
    p99_slack_ms: float = Field(default=5.0, ge=0, description="Added to the p99 budget (sub-ms noise).")
    min_agreement: float = Field(default=0.9, ge=0, le=1, description="Share of rows agreeing (shadow).")
    max_probability_distance: float = Field(default=0.1, ge=0, description="Mean |p - p'| (shadow).")
    regression_tolerance: float = Field(
        default=0.1, ge=0, description="Relative difference under which two regression outputs agree."
    )
    max_prediction_psi: float = Field(default=0.25, ge=0, description="PSI of the predictions' distribution.")
    min_distribution_rows: int = Field(
        default=100, ge=1, description="Rows per side from which the two PSI checks are judged."
    )
    min_labels: int = Field(
        default=50, ge=1, description="Labelled rows per side from which live quality is judged."
    )
    max_quality_drop: float = Field(
        default=0.02,
        ge=0,
        description="Challenger accuracy below the champion's by more (an error: relatively more) fails.",
    )
    max_input_psi: float = Field(
        default=0.25,
        ge=0,
        description="PSI of the inputs a canary received against the champion's (any feature).",
    )


class GateConfig(BaseModel):
    """Per-deployment thresholds (flow parameters; defaults in prefect.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric_floors: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.95, "accuracy": 0.9},
        description="Held-out metric -> minimum value.",
    )
    metric_ceilings: dict[str, float] = Field(
        default_factory=dict, description="Held-out metric -> maximum value (for lower-is-better metrics)."
    )
    max_regression: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.005, "accuracy": 0.01},
        description="Metric -> how much worse than the champion (same rows, same run) is tolerated.",
    )
    parity_tolerance: float = Field(default=1e-5, gt=0, description="Max ONNX vs scikit-learn difference.")
    latency_p99_ms: float = Field(
        default=5.0, gt=0, description="onnxruntime p99, one row, one thread (CPU time)."
    )
    max_model_bytes: int = Field(default=50_000_000, gt=0, description="ONNX model file size limit.")
    live: LiveThresholds = Field(
        default_factory=LiveThresholds, description="What a release's challenger must show on live traffic."
    )

    def problems_for(self, task: Task) -> list[str]:
        """Names of configured metrics the task does not produce (checked when the flow starts)."""
        known = TASK_METRICS[task]
        configured = {*self.metric_floors, *self.metric_ceilings, *self.max_regression}
        return [
            f"metric {name!r} is not computed for {task} (expected one of {sorted(known)})"
            for name in sorted(configured - known)
        ]


@dataclass(frozen=True)
class ChampionScores:
    """The current champion scored on the candidate's held-out rows, in the candidate's run."""

    version: str
    metrics: dict[str, float]
    error: str | None = None


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    threshold: str
    passed: bool


@dataclass(frozen=True)
class GateResult:
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "rejected"

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.value} (needs {c.threshold})" for c in self.checks if not c.passed]

    def table(self) -> list[dict[str, str]]:
        return [
            {"check": c.name, "value": c.value, "threshold": c.threshold, "verdict": _verdict(c.passed)}
            for c in self.checks
        ]

    def to_markdown(self) -> str:
        rows = [f"| {r['check']} | {r['value']} | {r['threshold']} | {r['verdict']} |" for r in self.table()]
        return "\n".join(["| check | value | threshold | verdict |", "|---|---|---|---|", *rows])


def _verdict(passed: bool) -> str:
    return "pass" if passed else "fail"


def _metric(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else "missing"


def metric_checks(metrics: dict[str, float], config: GateConfig) -> list[Check]:
    floors = [
        Check(
            f"metric.{name}", _metric(metrics, name), f">= {floor}", metrics.get(name, float("-inf")) >= floor
        )
        for name, floor in config.metric_floors.items()
    ]
    ceilings = [
        Check(
            f"metric.{name}",
            _metric(metrics, name),
            f"<= {ceiling}",
            metrics.get(name, float("inf")) <= ceiling,
        )
        for name, ceiling in config.metric_ceilings.items()
    ]
    return floors + ceilings


def champion_checks(
    metrics: dict[str, float], champion: ChampionScores | None, config: GateConfig
) -> list[Check]:
    """No regression against the champion beyond a tolerance; the first model has nothing to regress from."""
    if champion is None:
        return [Check("champion.regression", "no champion yet (first model)", "no regression", True)]
    if champion.error:
        return [Check("champion.regression", champion.error, "comparable with the champion", False)]
    checks = []
    for name, tolerance in config.max_regression.items():
        if name not in metrics or name not in champion.metrics:
            checks.append(Check(f"champion.{name}", "missing", "comparable", False))
            continue
        delta = metrics[name] - champion.metrics[name]
        if name in HIGHER_IS_BETTER:
            passed, threshold = delta >= -tolerance, f"delta >= -{tolerance}"
        else:
            passed, threshold = delta <= tolerance, f"delta <= +{tolerance}"
        value = (
            f"{metrics[name]:.4f} vs v{champion.version} {champion.metrics[name]:.4f} (delta {delta:+.4f})"
        )
        checks.append(Check(f"champion.{name}", value, threshold, passed))
    return checks


def conversion_checks(conversion: ConvertResult, config: GateConfig) -> list[Check]:
    if not conversion.converted or conversion.parity is None:
        return [Check("onnx.conversion", f"failed: {conversion.error}", "converts", False)]
    parity = conversion.parity
    return [
        Check("onnx.conversion", "converted", "converts", True),
        Check(
            "onnx.parity",
            f"labels {'identical' if parity.labels_identical else 'differ'}, "
            f"max diff {parity.max_abs_diff:.2e} on {parity.rows} rows",
            f"identical, <= {config.parity_tolerance:.0e}",
            parity.labels_identical and parity.max_abs_diff <= config.parity_tolerance,
        ),
        Check(
            "onnx.size",
            f"{conversion.size_bytes:,} bytes",
            f"<= {config.max_model_bytes:,} bytes",
            conversion.size_bytes <= config.max_model_bytes,
        ),
    ]


def latency_checks(latency: LatencyReport | None, config: GateConfig) -> list[Check]:
    if latency is None:
        return [
            Check("onnx.latency_p99", "not measured (no ONNX model)", f"<= {config.latency_p99_ms} ms", False)
        ]
    return [
        Check(
            "onnx.latency_p99",
            f"{latency.p99_ms:.3f} ms CPU (p50 {latency.p50_ms:.3f} ms, wall p99 "
            f"{latency.wall_p99_ms:.3f} ms, {latency.calls} single-row calls)",
            f"<= {config.latency_p99_ms} ms",
            latency.p99_ms <= config.latency_p99_ms,
        )
    ]


def evaluate_gate(
    metrics: dict[str, float],
    conversion: ConvertResult,
    latency: LatencyReport | None,
    champion: ChampionScores | None,
    config: GateConfig,
) -> GateResult:
    return GateResult(
        checks=(
            *metric_checks(metrics, config),
            *champion_checks(metrics, champion, config),
            *conversion_checks(conversion, config),
            *latency_checks(latency, config),
        )
    )


def record_gate(
    client: MlflowClient, model_name: str, version: str, result: GateResult, compared_with: str | None
) -> None:
    """The gate's registry writes: every check's value, threshold and verdict, and the champion version it
    was compared with (``none`` for a first model), as version tags; a pass sets ``challenger``."""
    client.set_model_version_tag(model_name, version, Tag.GATE_CHAMPION, compared_with or "none")
    for check in result.checks:
        client.set_model_version_tag(
            model_name,
            version,
            Tag.gate_check(check.name),
            f"{_verdict(check.passed)}: {check.value} (threshold {check.threshold})",
        )
    client.set_model_version_tag(model_name, version, Tag.GATE_VERDICT, result.verdict)
    client.set_model_version_tag(model_name, version, Tag.GATE_REASONS, "; ".join(result.reasons) or "none")
    if result.passed:
        client.set_registered_model_alias(model_name, CHALLENGER, version)
