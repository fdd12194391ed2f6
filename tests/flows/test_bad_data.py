"""The training pipeline given bad data: each kind stops the flow at validation with a report, and the
MLflow registry gets nothing (no model, no version, no run).

Every kind of bad file is read and validated by the function the flow's validation task calls
(``validate_source``), without Prefect; a file unreadable as a table and one of the wrong schema then run
the real flow under the session's temporary Prefect server against one throwaway MLflow store, the report
read back from the flow run's Prefect artifact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.tracking import connect
from flows.training import training_pipeline
from flows.validate import (
    LEAKAGE_EXPECTATION,
    UNREADABLE_EXPECTATION,
    DataValidationError,
    label_leakage,
    validate_frame,
    validate_source,
)
from models import datasets
from models.settings import Settings
from tests.conftest import make_settings, settings_env

SPEC = datasets.BREAST_CANCER
COLUMNS = "expect_table_columns_to_match_set"
DUPLICATES = "expect_compound_columns_to_be_unique"

Writer = Callable[[pd.DataFrame, Path], Path]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[Settings]:
    """One MLflow store for every case (each must leave it empty), the flow's settings in the environment."""
    settings = make_settings(tmp_path_factory.mktemp("bad-data") / "state")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings_env(settings).items():
            patch.setenv(key, value)
        connect(settings)  # the experiment exists, as after any earlier run
        yield settings


def csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def leaking_copy_of_the_label(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(mean_radius=frame["target"].astype(float))


def leaking_through_a_shift(frame: pd.DataFrame) -> pd.DataFrame:
    # not the label itself, but a feature whose range depends on it: perfectly predictive
    shifted = np.where(frame["target"] == 1, frame["mean_texture"] + 100.0, frame["mean_texture"])
    return frame.assign(mean_texture=shifted)


def duplicated_rows(frame: pd.DataFrame, share: float) -> pd.DataFrame:
    copies = int(len(frame) * share / (2 - share)) + 1  # every copy and its original count as duplicated
    return pd.concat([frame, frame.head(copies)], ignore_index=True)


def write_bytes(content: bytes, name: str) -> Writer:
    def write(_: pd.DataFrame, folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    return write


def write_frame(change: Callable[[pd.DataFrame], pd.DataFrame], name: str = "data.csv") -> Writer:
    def write(frame: pd.DataFrame, folder: Path) -> Path:
        return csv(change(frame), folder / name)

    return write


GARBAGE = bytes(range(256)) * 64
NULLS, UNREADABLE, LEAKAGE = (
    "expect_column_values_to_not_be_null",
    UNREADABLE_EXPECTATION,
    LEAKAGE_EXPECTATION,
)
ROWS, TYPES = "expect_table_row_count_to_be_between", "expect_column_values_to_be_in_type_list"


def spelled_out(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(mean_area=frame["mean_area"].astype(str).str.replace("1", "one"))


# (case, how the data file is made, the expectation that must fail, a word the report must contain)
CASES: list[tuple[str, Writer, str, str]] = [
    ("empty file", write_bytes(b"", "data.csv"), UNREADABLE, "empty file"),
    ("header only", write_frame(lambda f: f.head(0)), ROWS, "0"),
    ("missing columns", write_frame(lambda f: f.drop(columns=["mean_radius", "target"])), COLUMNS, "missing"),
    ("extra column", write_frame(lambda f: f.assign(patient_id=range(len(f)))), COLUMNS, "patient_id"),
    ("wrong types", write_frame(spelled_out), TYPES, "mean_area"),
    ("all-null column", write_frame(lambda f: f.assign(mean_area=None)), NULLS, "100.0%"),
    ("label copied into a feature", write_frame(leaking_copy_of_the_label), LEAKAGE, "mean_radius 1.000"),
    ("feature that predicts the label", write_frame(leaking_through_a_shift), LEAKAGE, "mean_texture"),
    ("duplicated rows", write_frame(lambda f: duplicated_rows(f, 0.12)), DUPLICATES, "unexpected"),
    ("binary garbage", write_bytes(GARBAGE, "data.csv"), UNREADABLE, "not a readable csv"),
    (
        "JSON in a .json file",
        write_bytes(b'[{"mean_radius": 1}]', "data.json"),
        UNREADABLE,
        ".csv or .parquet",
    ),
    (
        "JSON in a .csv file",
        write_bytes(b'{"records": [{"mean_radius": 1.0}]}\n', "data.csv"),
        COLUMNS,
        "missing",
    ),
    ("garbage in a .parquet file", write_bytes(GARBAGE, "data.parquet"), UNREADABLE, "parquet"),
]


def report_artifact(flow_run_id: UUID) -> str:
    async def read() -> list[str]:
        async with get_client() as prefect:
            found = await prefect.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
            return [str(a.data) for a in found if a.key == "data-validation-breast-cancer"]

    reports = asyncio.run(read())
    assert len(reports) == 1, reports
    return reports[0]


@pytest.mark.parametrize(("case", "write", "expectation", "observed"), CASES, ids=[c[0] for c in CASES])
def test_bad_data_fails_validation_with_the_expectation_and_what_was_seen(
    breast_cancer: pd.DataFrame, tmp_path: Path, case: str, write: Writer, expectation: str, observed: str
) -> None:
    _, report = validate_source(str(write(breast_cancer, tmp_path)), SPEC)
    assert not report.passed, case
    failed = [o for o in report.failures if o.expectation == expectation]
    assert failed, report.to_markdown()
    assert any(observed in f"{o.column} {o.observed}" for o in failed), report.to_markdown()
    assert "FAILED" in report.to_markdown() and expectation in report.to_markdown()


def test_good_data_passes_validation(breast_cancer: pd.DataFrame, tmp_path: Path) -> None:
    frame, report = validate_source(str(csv(breast_cancer, tmp_path / "data.csv")), SPEC)
    assert report.passed, report.to_markdown()
    assert len(frame) == len(breast_cancer) == report.rows


FLOW_CASES = [case for case in CASES if case[0] in {"binary garbage", "missing columns"}]


@pytest.mark.parametrize(
    ("case", "write", "expectation", "observed"), FLOW_CASES, ids=[c[0] for c in FLOW_CASES]
)
def test_bad_data_stops_the_pipeline_with_a_report_and_registers_nothing(
    store: Settings,
    breast_cancer: pd.DataFrame,
    tmp_path: Path,
    case: str,
    write: Writer,
    expectation: str,
    observed: str,
) -> None:
    source = write(breast_cancer, tmp_path)
    state = training_pipeline(data_source=str(source), deploy_target="none", return_state=True)

    assert state.is_failed(), case
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DataValidationError), repr(error)
    failed = [o for o in error.report.failures if o.expectation == expectation]
    assert failed, error.report.to_markdown()
    assert any(observed in f"{o.column} {o.observed}" for o in failed), error.report.to_markdown()
    assert state.state_details.flow_run_id is not None
    markdown = report_artifact(state.state_details.flow_run_id)
    assert "FAILED" in markdown and expectation in markdown

    client = connect(store)
    assert client.search_registered_models() == []
    experiment = client.get_experiment_by_name(store.experiment_name)
    assert experiment is not None and client.search_runs([experiment.experiment_id]) == []


# --- the thresholds, on their own (no flow): just under passes, just over fails -----------------------


def test_duplicates_under_the_threshold_pass_and_over_it_fail(breast_cancer: pd.DataFrame) -> None:
    def duplicates(frame: pd.DataFrame, spec: datasets.DatasetSpec) -> bool:
        outcome = next(o for o in validate_frame(frame, spec).outcomes if o.expectation == DUPLICATES)
        return outcome.passed

    assert duplicates(duplicated_rows(breast_cancer, 0.04), SPEC)
    assert not duplicates(duplicated_rows(breast_cancer, 0.08), SPEC)
    assert duplicates(duplicated_rows(breast_cancer, 0.08), replace(SPEC, max_duplicate_share=0.10))


def test_leakage_threshold_is_the_specs_and_honest_features_pass(breast_cancer: pd.DataFrame) -> None:
    honest = label_leakage(breast_cancer, SPEC)
    assert honest.passed and "best single feature" in honest.observed
    # the best honest feature scores about 0.89: a limit under it flags it, the default does not
    assert not label_leakage(breast_cancer, replace(SPEC, max_single_feature_score=0.8)).passed
    noisy = breast_cancer.assign(
        mean_radius=breast_cancer["target"] + np.random.default_rng(0).normal(0, 2, 569)
    )
    assert label_leakage(noisy, SPEC).passed  # correlated with the label is not leakage


@pytest.mark.parametrize("name", ["churn", "housing"])
def test_leakage_on_mixed_and_regression_data(name: str) -> None:
    spec = datasets.get_spec(name)
    frame = datasets.load_frame(datasets.demo_source(name))
    assert label_leakage(frame, spec).passed
    if spec.task == "classification":
        leaked = frame.assign(plan=np.where(frame[spec.target] == 1, "premium", "basic"))
        leaking_column = "plan"
    else:
        leaked = frame.assign(area_sqm=frame[spec.target] * 2 + 5)
        leaking_column = "area_sqm"
    outcome = label_leakage(leaked, spec)
    assert not outcome.passed and outcome.column == leaking_column, outcome


def test_extra_columns_can_be_allowed_by_the_spec(breast_cancer: pd.DataFrame) -> None:
    extra = breast_cancer.assign(patient_id=range(len(breast_cancer)))
    assert not validate_frame(extra, SPEC).passed
    assert validate_frame(extra, replace(SPEC, allow_extra_columns=True)).passed


def test_infinite_numbers_fail_even_without_a_range(breast_cancer: pd.DataFrame) -> None:
    report = validate_frame(breast_cancer.assign(worst_area=np.inf), SPEC)
    assert ("expect_column_values_to_be_between", "worst_area") in {
        (o.expectation, o.column) for o in report.failures
    }
