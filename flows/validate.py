"""Data validation with a Great Expectations suite built from the dataset's specification."""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.datasets import DatasetSpec, UnreadableDataError, load_frame

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.data_context import AbstractDataContext

NUMERIC_TYPES = ["int", "int32", "int64", "float", "float32", "float64"]
LARGEST = sys.float_info.max


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

    def to_dict(self) -> dict[str, Any]:
        """Every expectation and what was observed, with the verdict (logged with the training run)."""
        return {"dataset": self.dataset, "rows": self.rows, "passed": self.passed, "summary": self.summary,
                "outcomes": [asdict(o) for o in self.outcomes]}  # fmt: skip

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
    columns = [*spec.feature_names, spec.target]
    suite.add_expectation(
        gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=not spec.allow_extra_columns)
    )
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=spec.min_rows))
    # Rows that repeat another row in full (every copy counts, the first one too), up to the spec's share.
    suite.add_expectation(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=columns, mostly=1 - spec.max_duplicate_share, ignore_row_if="never"
        )
    )
    for feature in spec.features:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=feature.name))
        if feature.kind == "numeric":
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeInTypeList(column=feature.name, type_list=NUMERIC_TYPES)
            )
            # finite, and within the spec's range where it has one
            low = feature.min_value if feature.min_value is not None else -LARGEST
            high = feature.max_value if feature.max_value is not None else LARGEST
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(column=feature.name, min_value=low, max_value=high)
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
    if exception and "raised_exception" not in exception:  # keyed by the metric that raised
        exception = next((e for e in exception.values() if isinstance(e, dict)), None)
    if exception and exception.get("raised_exception"):
        message = str(exception.get("exception_message", "")).splitlines()
        return f"error: {message[0] if message else 'expectation raised'}"
    mismatched = result.get("details", {}).get("mismatched")
    if mismatched:  # the table's columns: say which are missing and which are not expected
        return "; ".join(f"{kind}: {sorted(names)}" for kind, names in mismatched.items() if names)[:240]
    if "observed_value" in result:
        return str(result["observed_value"])[:120]
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list", [])[:5]
        return (
            f"{result['unexpected_count']} unexpected "
            f"({result.get('unexpected_percent') or 0:.1f}%), e.g. {str(sample)[:120]}"
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


LEAKAGE_EXPECTATION = "expect_no_feature_to_predict_the_target_alone"
UNREADABLE_EXPECTATION = "expect_data_source_to_be_a_readable_table"
LEAKAGE_SAMPLE_ROWS = 20_000  # the check's cost stays flat on large tables


def _single_feature_score(x: pd.DataFrame, y: pd.Series, task: str) -> float:
    """Cross-validated score of a shallow tree on one feature: balanced accuracy, or R² for regression."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    if task == "classification":
        model: Any = DecisionTreeClassifier(max_depth=4, random_state=0)
        folds: Any = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
        return float(cross_val_score(model, x, y, cv=folds, scoring="balanced_accuracy").mean())
    model = DecisionTreeRegressor(max_depth=6, random_state=0)
    folds = KFold(n_splits=3, shuffle=True, random_state=0)
    return float(cross_val_score(model, x, y, cv=folds, scoring="r2").mean())


def _leakage_frame(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame | None:
    """The rows the leakage check can use (features and target present), or None when it cannot run."""
    columns = [*spec.feature_names, spec.target]
    if any(c not in frame.columns for c in columns):
        return None  # the schema expectation already fails
    usable = frame[columns].dropna(subset=[spec.target])
    if len(usable) > LEAKAGE_SAMPLE_ROWS:
        usable = usable.sample(LEAKAGE_SAMPLE_ROWS, random_state=0)
    enough = len(usable) >= 30
    if spec.task == "classification":
        counts = usable[spec.target].value_counts()
        enough = enough and len(counts) > 1 and counts.min() >= 3
    return usable if enough else None


def _feature_column(values: pd.Series, kind: str) -> pd.DataFrame:
    if kind == "numeric":
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        return numbers.where(np.isfinite(numbers)).to_frame()  # trees take NaN as a value of its own
    return values.astype("string").fillna("").astype("category").cat.codes.to_frame()


def label_leakage(frame: pd.DataFrame, spec: DatasetSpec) -> Outcome:
    """Fail when one feature alone predicts the target at least as well as ``max_single_feature_score``."""
    usable = _leakage_frame(frame, spec)
    if usable is None:
        return Outcome(LEAKAGE_EXPECTATION, None, True, "not checked: too few usable rows or columns")
    target = usable[spec.target]
    if spec.task == "regression":
        target = pd.to_numeric(target, errors="coerce").fillna(0.0)
    else:
        target = target.astype("string")
    scores = {
        f.name: _single_feature_score(_feature_column(usable[f.name], f.kind), target, spec.task)
        for f in spec.features
    }
    metric = "balanced accuracy" if spec.task == "classification" else "R²"
    limit = spec.max_single_feature_score
    leaking = sorted((name for name, s in scores.items() if s >= limit), key=lambda name: scores[name])
    best = max(scores, key=lambda name: scores[name])
    if leaking:
        worst = leaking[-1]
        named = ", ".join(f"{n} {scores[n]:.3f}" for n in reversed(leaking))
        observed = f"{metric} from one feature alone: {named} (limit {spec.max_single_feature_score})"
        return Outcome(LEAKAGE_EXPECTATION, worst, False, observed[:240])
    observed = f"best single feature {best}: {metric} {scores[best]:.3f} < {spec.max_single_feature_score}"
    return Outcome(LEAKAGE_EXPECTATION, None, True, observed)


def validate_frame(frame: pd.DataFrame, spec: DatasetSpec) -> ValidationReport:
    context = _ephemeral_context()
    asset = context.data_sources.add_pandas(spec.name).add_dataframe_asset("frame")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(build_suite(spec), result_format="SUMMARY")
    outcomes = (*(_outcome(r) for r in result.results), label_leakage(frame, spec))
    return ValidationReport(dataset=spec.name, rows=len(frame), outcomes=outcomes)


def build_batch_suite(spec: DatasetSpec, present: Collection[str] | None = None) -> gx.ExpectationSuite:
    """The schema part of the training data's suite, for data to be scored: every feature present (other
    columns, the target among them, may be there too) and each numeric feature of a numeric type (only
    those ``present``, when given: a missing one is the first expectation's failure already).

    Row-level problems (nulls, values out of range, unknown categories) do not refuse a batch: the scorer
    sets those rows aside with their reason (``models.batch.check_rows``, the same bounds as this suite).
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    training = build_suite(spec)
    suite = gx.ExpectationSuite(name=f"{spec.name}_batch_suite")
    suite.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=spec.feature_names, exact_match=False))
    for expectation in training.expectations:
        column = getattr(expectation, "column", None)
        if expectation.expectation_type == "expect_column_values_to_be_in_type_list" and (
            present is None or column in present
        ):
            suite.add_expectation(expectation.copy(update={"id": None}))
    return suite


def _parsed_numbers(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A text column of a numeric feature (CSV reads a column with one stray word as text) taken as numbers
    when most of its values are: the stray values are the scorer's to quarantine, not a wrong schema."""
    parsed = frame.copy()
    for name in spec.numeric_features:
        if name in parsed and parsed[name].dtype == object:
            numbers = pd.to_numeric(parsed[name], errors="coerce")
            present = parsed[name].notna()
            if present.any() and numbers[present].notna().mean() >= 0.5:
                parsed[name] = numbers
    return parsed


def validate_batch_sample(frame: pd.DataFrame, spec: DatasetSpec, source: str) -> ValidationReport:
    """The batch suite on the first rows of a file to be scored."""
    context = _ephemeral_context()
    asset = context.data_sources.add_pandas(spec.name).add_dataframe_asset("batch")
    sample = _parsed_numbers(frame, spec)
    batch = asset.add_batch_definition_whole_dataframe("sample").get_batch(
        batch_parameters={"dataframe": sample}
    )
    result = batch.validate(build_batch_suite(spec, set(frame.columns)), result_format="SUMMARY")
    return ValidationReport(
        dataset=source, rows=len(frame), outcomes=tuple(_outcome(r) for r in result.results)
    )


def unreadable_report(spec: DatasetSpec, problem: str) -> ValidationReport:
    """The report for a data source that is not a table at all: nothing else could be checked."""
    return ValidationReport(
        dataset=spec.name, rows=0, outcomes=(Outcome(UNREADABLE_EXPECTATION, None, False, problem),)
    )


def validate_source(source: str, spec: DatasetSpec) -> tuple[pd.DataFrame, ValidationReport]:
    """Read the data source and validate it; a source that is not a table at all gets a report too."""
    try:
        frame = load_frame(source)
    except UnreadableDataError as exc:
        return pd.DataFrame(), unreadable_report(spec, str(exc))
    return frame, validate_frame(frame, spec)
