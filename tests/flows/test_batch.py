"""The batch-score flow on a real Dask cluster (two worker processes) under the session's Prefect server,
against a throwaway MLflow registry whose champion was trained and gated like any other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow.artifacts
import pandas as pd
import pytest
from prefect.client.schemas.objects import State

from flows.batch import BatchRefusedError, batch_score_flow
from flows.tracking import connect
from models import batch, datasets
from models.inference_records import read_records
from tests.conftest import Registered, make_settings, settings_env, train_and_register

SPEC = datasets.BREAST_CANCER


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: None, split: datasets.Split
) -> Iterator[Registered]:
    settings = make_settings(tmp_path_factory.mktemp("batch") / "state")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings_env(settings).items():
            patch.setenv(key, value)
        yield train_and_register(settings, split, "logistic_regression", promote_it=True)


def inputs(folder: Path, frame: pd.DataFrame) -> Path:
    """A day's folder of two CSV files (one with bad rows) and a Parquet file in a sub-folder."""
    (folder / "eu").mkdir(parents=True)
    bad = frame.iloc[:100].astype(object).copy()
    bad.iloc[7, bad.columns.get_loc("mean_radius")] = None
    bad.iloc[9, bad.columns.get_loc("mean_area")] = -3.0
    bad.to_csv(folder / "a.csv", index=False)
    frame.iloc[100:250].to_csv(folder / "b.csv", index=False)
    frame.iloc[250:].to_parquet(folder / "eu" / "c.parquet")
    return folder


def test_every_row_is_scored_once_with_provenance_and_the_batch_is_recorded(
    registry: Registered, breast_cancer: pd.DataFrame, tmp_path: Path
) -> None:
    source = inputs(tmp_path / "2026-12-01", breast_cancer)
    result = batch_score_flow(str(source), str(tmp_path / "out"))

    assert (result["rows"], result["scored"], result["quarantined"]) == (
        len(breast_cancer),
        len(breast_cancer) - 2,
        2,
    )
    assert result["version"] == registry.version and result["skew"] == []
    written = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.parquet")
    )
    assert written == ["_quarantine/a.parquet", "a.parquet", "b.parquet", "eu/c.parquet"]
    scored = pd.concat([pd.read_parquet(tmp_path / "out" / name) for name in written[1:]], ignore_index=True)
    assert len(scored) == len(breast_cancer) - 2
    assert not scored.duplicated(["input_file", "row_number"]).any()
    assert set(scored.run_id) == {registry.run_id} and set(scored.batch_id) == {result["batch_id"]}
    quarantined = pd.read_parquet(tmp_path / "out" / "_quarantine" / "a.parquet")
    assert quarantined.set_index("row_number").reason.to_dict() == {
        7: "mean_radius: null",
        9: "mean_area: -3 is below 0, the lower bound of its data suite",
    }

    client = connect(registry.settings)
    run = client.get_run(result["batch_run"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == f"{registry.settings.experiment_name}-batch"
    assert run.data.metrics["rows"] == len(breast_cancer) and run.data.metrics["quarantined"] == 2
    assert (
        run.data.tags["model_version"] == registry.version and run.data.tags["batch_id"] == result["batch_id"]
    )
    record = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/batch.json"))
    assert {Path(f["input_file"]).name for f in record["files"]} == {"a.csv", "b.csv", "c.parquet"}

    log = registry.settings.inference_log_dir
    (logged,) = [r for r in read_records(log, batches=True) if r["request_id"] == result["batch_id"]]
    assert (logged["version"], logged["run_id"], logged["batch_run"]) == (
        registry.version,
        registry.run_id,
        run.info.run_id,
    )
    assert logged["quarantined"] == 2 and len(logged["files"]) == 3
    assert [r for r in read_records(log) if r["request_id"] == result["batch_id"]] == []  # not a request


def test_a_file_of_the_wrong_schema_refuses_the_batch_before_anything_is_scored(
    registry: Registered, breast_cancer: pd.DataFrame, tmp_path: Path
) -> None:
    source = inputs(tmp_path / "in", breast_cancer)
    breast_cancer.drop(columns=["mean_texture"]).iloc[:50].to_csv(source / "d.csv", index=False)
    with pytest.raises(BatchRefusedError, match=r"1 of 4 inputs refused(.|\n)*missing: \['mean_texture'\]"):
        batch_score_flow(str(source), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_skew_against_the_training_profile_warns_or_fails_by_parameter(
    registry: Registered, breast_cancer: pd.DataFrame, tmp_path: Path
) -> None:
    shifted = breast_cancer.copy()
    shifted[SPEC.feature_names] = shifted[SPEC.feature_names] * 1.8
    shifted.to_parquet(tmp_path / "shifted.parquet")
    warned = batch_score_flow(str(tmp_path / "shifted.parquet"), str(tmp_path / "warn"))
    assert any(b.startswith("drift mean_radius") for b in warned["skew"]), warned["skew"]
    assert (tmp_path / "warn" / "shifted.parquet").is_file()
    failed = batch_score_flow(
        str(tmp_path / "shifted.parquet"), str(tmp_path / "fail"), on_skew="fail", return_state=True
    )
    assert isinstance(failed, State) and failed.is_failed()
    assert "skew against the training profile: drift" in str(failed.message)
    assert (tmp_path / "fail" / "shifted.parquet").is_file()  # scored and recorded, then failed


def test_a_version_by_number_and_an_unknown_alias(
    registry: Registered, breast_cancer: pd.DataFrame, tmp_path: Path
) -> None:
    breast_cancer.iloc[:60].to_csv(tmp_path / "x.csv", index=False)
    result = batch_score_flow(str(tmp_path / "x.csv"), str(tmp_path / "out"), version=registry.version)
    assert result["version"] == registry.version and result["rows"] == 60
    with pytest.raises(BatchRefusedError, match="no 'canary' alias"):
        batch_score_flow(str(tmp_path / "x.csv"), str(tmp_path / "out2"), alias="canary")


def test_the_output_row_numbers_point_back_at_the_input_rows(
    registry: Registered, breast_cancer: pd.DataFrame, tmp_path: Path
) -> None:
    breast_cancer.to_csv(tmp_path / "all.csv", index=False)
    batch_score_flow(str(tmp_path / "all.csv"), str(tmp_path / "out"), chunk_rows=50)
    scored = pd.read_parquet(tmp_path / "out" / "all.parquet")
    assert scored.row_number.tolist() == list(range(len(breast_cancer)))
    assert set(scored.columns) == {"label", "probability_0", "probability_1", *batch.PROVENANCE_COLUMNS}
