"""The promotion gate: evaluation checks on a candidate version, each with value, threshold, verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from flows.convert import ConvertResult
from models.registry import CHALLENGER, Tag


class GateConfig(BaseModel):
    """Per-deployment thresholds (flow parameters, defaults in prefect.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric_floors: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.95, "accuracy": 0.9},
        description="Held-out metric -> minimum value (higher is better).",
    )
    metric_ceilings: dict[str, float] = Field(
        default_factory=dict, description="Held-out metric -> maximum value (lower is better)."
    )
    parity_tolerance: float = Field(default=1e-5, gt=0, description="Max |ONNX - sklearn| output.")


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
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.value} (needs {c.threshold})" for c in self.checks if not c.passed]

    def table(self) -> list[dict[str, str]]:
        return [
            {"check": c.name, "value": c.value, "threshold": c.threshold, "verdict": _verdict(c.passed)}
            for c in self.checks
        ]


def _verdict(passed: bool) -> str:
    return "pass" if passed else "fail"


def metric_checks(metrics: dict[str, float], config: GateConfig) -> list[Check]:
    checks = []
    for name, floor in config.metric_floors.items():
        value = metrics.get(name)
        checks.append(
            Check(
                f"metric.{name}",
                "missing" if value is None else f"{value:.4f}",
                f">= {floor}",
                value is not None and value >= floor,
            )
        )
    for name, ceiling in config.metric_ceilings.items():
        value = metrics.get(name)
        checks.append(
            Check(
                f"metric.{name}",
                "missing" if value is None else f"{value:.4f}",
                f"<= {ceiling}",
                value is not None and value <= ceiling,
            )
        )
    return checks


def conversion_checks(conversion: ConvertResult) -> list[Check]:
    if not conversion.converted or conversion.parity is None:
        return [Check("onnx.conversion", f"failed: {conversion.error}", "converts", False)]
    parity = conversion.parity
    return [
        Check("onnx.conversion", "converted", "converts", True),
        Check(
            "onnx.parity",
            f"labels {'identical' if parity.labels_identical else 'differ'}, "
            f"max diff {parity.max_abs_diff:.2e} on {parity.rows} rows",
            f"identical, <= {parity.tolerance:.0e}",
            parity.passed,
        ),
    ]


def evaluate_gate(metrics: dict[str, float], conversion: ConvertResult, config: GateConfig) -> GateResult:
    return GateResult(checks=(*metric_checks(metrics, config), *conversion_checks(conversion)))


def record_gate(client: MlflowClient, model_name: str, version: str, result: GateResult) -> None:
    """Every check's value, threshold and verdict as version tags; a pass sets ``challenger``."""
    for check in result.checks:
        client.set_model_version_tag(
            model_name,
            version,
            Tag.gate_check(check.name),
            f"{_verdict(check.passed)}: {check.value} (threshold {check.threshold})",
        )
    client.set_model_version_tag(
        model_name, version, Tag.GATE_VERDICT, "passed" if result.passed else "rejected"
    )
    client.set_model_version_tag(model_name, version, Tag.GATE_REASONS, "; ".join(result.reasons) or "none")
    if result.passed:
        client.set_registered_model_alias(model_name, CHALLENGER, version)
