import numpy as np
import pandas as pd
import pytest

from flows.validate import DataValidationError, ValidationReport, validate_frame
from models import datasets

SPEC = datasets.BREAST_CANCER


def failed_expectations(report: ValidationReport) -> set[tuple[str, str | None]]:
    return {(o.expectation, o.column) for o in report.failures}


def test_the_demo_data_passes(breast_cancer: pd.DataFrame) -> None:
    report = validate_frame(breast_cancer, SPEC)
    assert report.passed, report.to_markdown()
    assert report.rows == 569
    assert len(report.outcomes) > 3 * len(SPEC.features)


def test_missing_column_is_reported(breast_cancer: pd.DataFrame) -> None:
    report = validate_frame(breast_cancer.drop(columns=["mean_radius"]), SPEC)
    assert not report.passed
    assert ("expect_table_columns_to_match_set", None) in failed_expectations(report)
    assert any(o.column == "mean_radius" for o in report.failures)


def test_nulls_negative_values_and_bad_labels_are_reported(breast_cancer: pd.DataFrame) -> None:
    bad = breast_cancer.copy()
    bad.loc[0:4, "mean_texture"] = np.nan
    bad.loc[5, "mean_area"] = -1.0
    bad.loc[6, "target"] = 7
    report = validate_frame(bad, SPEC)
    assert failed_expectations(report) >= {
        ("expect_column_values_to_not_be_null", "mean_texture"),
        ("expect_column_values_to_be_between", "mean_area"),
        ("expect_column_values_to_be_in_set", "target"),
    }
    markdown = report.to_markdown()
    assert "FAILED" in markdown
    assert "mean_texture" in markdown and "5 unexpected" in markdown


def test_wrong_types_and_too_few_rows_are_reported(breast_cancer: pd.DataFrame) -> None:
    bad = breast_cancer.head(20).copy()
    bad["mean_radius"] = bad["mean_radius"].astype(str)
    report = validate_frame(bad, SPEC)
    assert failed_expectations(report) >= {
        ("expect_table_row_count_to_be_between", None),
        ("expect_column_values_to_be_in_type_list", "mean_radius"),
    }


def test_error_carries_the_report(breast_cancer: pd.DataFrame) -> None:
    report = validate_frame(breast_cancer.head(10), SPEC)
    error = DataValidationError(report)
    assert error.report is report
    assert "expect_table_row_count_to_be_between" in str(error)


@pytest.mark.parametrize("rows", [0])
def test_empty_table_fails(breast_cancer: pd.DataFrame, rows: int) -> None:
    assert not validate_frame(breast_cancer.head(rows), SPEC).passed
