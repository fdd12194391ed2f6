"""Data validation with a Great Expectations suite built from the dataset's specification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from models.datasets import DatasetSpec

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.data_context import AbstractDataContext

NUMERIC_TYPES = ["int", "int32", "int64", "float", "float32", "float64"]


class DataValidationError(RuntimeError):
    """The data failed its expectations; ``report`` says which and what was observed."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.to_markdown())
        self.report = report


@dataclass(frozen=True)
class Outcome:
    expectation: str
    column: str | None
    passed: bool
    observed: str


@dataclass(frozen=True)
class ValidationReport:
    dataset: str
    rows: int
    outcomes: tuple[Outcome, ...]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def summary(self) -> str:
        total = len(self.outcomes)
        return f"{total - len(self.failures)}/{total} expectations passed"

    def to_markdown(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"# Data validation {verdict}: {self.dataset}",
            "",
            f"{self.rows} rows; {self.summary}.",
        ]
        if self.failures:
            lines += ["", "| expectation | column | observed |", "|---|---|---|"]
            lines += [f"| {o.expectation} | {o.column or '(table)'} | {o.observed} |" for o in self.failures]
        return "\n".join(lines)


def build_suite(spec: DatasetSpec) -> gx.ExpectationSuite:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=f"{spec.name}_suite")
    suite.add_expectation(
        gxe.ExpectTableColumnsToMatchSet(column_set=[*spec.feature_names, spec.target], exact_match=False)
    )
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=spec.min_rows))
    for feature in spec.features:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=feature.name))
        if feature.kind == "numeric":
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeInTypeList(column=feature.name, type_list=NUMERIC_TYPES)
            )
            if feature.min_value is not None or feature.max_value is not None:
                suite.add_expectation(
                    gxe.ExpectColumnValuesToBeBetween(
                        column=feature.name,
                        min_value=feature.min_value,
                        max_value=feature.max_value,
                    )
                )
        elif feature.categories:
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeInSet(column=feature.name, value_set=list(feature.categories))
            )
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=spec.target))
    if spec.target_values:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(column=spec.target, value_set=list(spec.target_values))
        )
    return suite


def _observed(result: dict[str, Any], exception: dict[str, Any] | None) -> str:
    if exception and exception.get("raised_exception"):
        message = str(exception.get("exception_message", "")).splitlines()
        return f"error: {message[0] if message else 'expectation raised'}"
    if "observed_value" in result:
        return str(result["observed_value"])[:120]
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list", [])[:5]
        return (
            f"{result['unexpected_count']} unexpected "
            f"({result.get('unexpected_percent') or 0:.1f}%), e.g. {sample}"
        )
    return ""


def _ephemeral_context() -> AbstractDataContext:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _outcome(result: ExpectationValidationResult) -> Outcome:
    config = result.expectation_config
    return Outcome(
        expectation=config.type if config else "unknown",
        column=config.kwargs.get("column") if config else None,
        passed=bool(result.success),
        observed=_observed(result.result, result.exception_info),
    )


def validate_frame(frame: pd.DataFrame, spec: DatasetSpec) -> ValidationReport:
    context = _ephemeral_context()
    asset = context.data_sources.add_pandas(spec.name).add_dataframe_asset("frame")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(build_suite(spec), result_format="SUMMARY")
    outcomes = tuple(_outcome(r) for r in result.results)
    return ValidationReport(dataset=spec.name, rows=len(frame), outcomes=outcomes)
