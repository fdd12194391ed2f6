"""Batch scoring without any framework: chunked reads, quarantine with reasons, outputs equal to the
service's and scikit-learn's, provenance on every row, files that appear only when complete."""

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.pipeline import Pipeline

from models import batch, datasets
from models.convert import to_onnx
from models.features import feeds_from_records
from models.scoring import OnnxModel, predictions

SPEC = datasets.BREAST_CANCER
PROVENANCE = batch.Provenance("bc", "3", "run-abc", "batch-1")


@pytest.fixture(scope="module")
def model(fitted: Pipeline) -> OnnxModel:
    return OnnxModel.load(to_onnx(fitted, SPEC, {}).SerializeToString())


def with_bad_rows(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame[SPEC.feature_names].astype(object).copy()
    bad.loc[3, "mean_radius"] = None
    bad.loc[5, "mean_texture"] = "twelve"
    bad.loc[8, "mean_area"] = float("inf")
    bad.loc[13, "worst_symmetry"] = -1.0
    return bad


def score(model: OnnxModel, source: Path, out: Path, chunk_rows: int = 40) -> batch.FileResult:
    return batch.score_file(
        model, SPEC, str(source), str(out / "part.parquet"), str(out / "_quarantine" / "part.parquet"),
        PROVENANCE, chunk_rows=chunk_rows,
    )  # fmt: skip


def test_bad_rows_are_set_aside_with_their_reason_and_the_rest_scored_as_the_service_would(
    model: OnnxModel, fitted: Pipeline, split: datasets.Split, tmp_path: Path
) -> None:
    holdout = split.holdout.reset_index(drop=True)
    source = tmp_path / "in.csv"
    with_bad_rows(holdout).to_csv(source, index=False)
    result = score(model, source, tmp_path / "out")

    assert (result.rows, result.quarantined, result.scored) == (len(holdout), 4, len(holdout) - 4)
    quarantined = pd.read_parquet(tmp_path / "out" / "_quarantine" / "part.parquet")
    assert dict(zip(quarantined.row_number, quarantined.reason, strict=True)) == {
        3: "mean_radius: null",
        5: "mean_texture: not a finite number: 'twelve'",
        8: "mean_area: not a finite number: inf",
        13: "worst_symmetry: -1 is below 0, the lower bound of its data suite",
    }
    scored = pd.read_parquet(tmp_path / "out" / "part.parquet")
    assert sorted(scored.row_number) == sorted(set(range(len(holdout))) - {3, 5, 8, 13})
    assert set(scored.columns) >= {"label", "probability_0", "probability_1", *batch.PROVENANCE_COLUMNS}
    assert scored[
        ["model_name", "model_version", "run_id", "batch_id"]
    ].drop_duplicates().values.tolist() == [["bc", "3", "run-abc", "batch-1"]]
    rows = holdout.iloc[scored.row_number]
    np.testing.assert_allclose(scored.probability_1, fitted.predict_proba(rows)[:, 1], atol=1e-9)
    online = predictions(
        model.run(feeds_from_records(datasets.records(rows, SPEC), model.inputs)), model.classes
    )
    assert scored.label.tolist() == [p["label"] for p in online]
    assert scored.probability_1.tolist() == [p["probabilities"]["1"] for p in online]  # bit for bit
    assert [p.name for p in (tmp_path / "out").rglob("*partial*")] == []


def test_parquet_is_read_in_chunks_and_every_row_scored_once(
    model: OnnxModel, split: datasets.Split, tmp_path: Path
) -> None:
    frame = pd.concat([split.holdout] * 5, ignore_index=True)
    source = tmp_path / "in.parquet"
    frame.to_parquet(source, row_group_size=100)
    result = score(model, source, tmp_path / "out", chunk_rows=64)
    assert (result.rows, result.scored, result.quarantine_file) == (len(frame), len(frame), None)
    written = pq.ParquetFile(tmp_path / "out" / "part.parquet")
    assert written.metadata.num_row_groups > 1  # written chunk by chunk
    assert written.read(columns=["row_number"]).column(0).to_pylist() == list(range(len(frame)))
    assert len(result.sample) == len(frame)  # small chunks: every row is in the skew sample
    assert result.input_digest == batch.file_digest(str(source))


def test_a_file_that_breaks_mid_way_leaves_no_output_and_a_retry_replaces_it_whole(
    model: OnnxModel, split: datasets.Split, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    split.holdout[SPEC.feature_names].to_csv(source, index=False)
    score(model, source, tmp_path / "out")
    first = pd.read_parquet(tmp_path / "out" / "part.parquet")
    lines = source.read_text().splitlines()
    source.write_text("\n".join([*lines[:100], lines[100] + ",1,2,3", *lines[101:]]) + "\n")  # a torn row
    with pytest.raises(pd.errors.ParserError):
        score(model, source, tmp_path / "out")
    assert pd.read_parquet(tmp_path / "out" / "part.parquet").equals(first)  # the earlier file, whole
    assert [p.name for p in (tmp_path / "out").rglob("*partial*")] == []


def test_inputs_by_file_directory_or_glob_and_outputs_keep_their_layout(tmp_path: Path) -> None:
    for name in ("2026-12-01/a.csv", "2026-12-01/b.parquet", "2026-12-02/a.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n1\n")
    (tmp_path / "notes.txt").write_text("not data")
    every = batch.input_files(str(tmp_path))
    assert [Path(f).relative_to(tmp_path).as_posix() for f in every] == [
        "2026-12-01/a.csv", "2026-12-01/b.parquet", "2026-12-02/a.csv",
    ]  # fmt: skip
    assert batch.input_files(f"file://{tmp_path}/*/a.csv") == [every[0], every[2]]
    assert batch.output_names(every) == {
        every[0]: "2026-12-01/a.parquet", every[1]: "2026-12-01/b.parquet", every[2]: "2026-12-02/a.parquet",
    }  # fmt: skip
    assert batch.output_names([every[2]]) == {every[2]: "a.parquet"}
    with pytest.raises(FileNotFoundError, match="no such file"):
        batch.input_files(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"not \.csv or \.parquet"):
        batch.input_files(str(tmp_path / "*.txt"))


def test_golden_rows_check_the_batch_path_against_the_versions_own_answers(
    model: OnnxModel, fitted: Pipeline, split: datasets.Split
) -> None:
    from flows.convert import golden_payload

    golden: dict[str, Any] = golden_payload(fitted, split)
    assert batch.golden_mismatches(model, SPEC, golden, tolerance=1e-6) == []
    shifted = {**golden, "probabilities": [[p0 + 0.01, p1 - 0.01] for p0, p1 in golden["probabilities"]]}
    assert batch.golden_mismatches(model, SPEC, shifted, tolerance=1e-6) == [
        "golden rows differ by 0.01 > 1e-06"
    ]


def test_the_skew_sample_is_bounded_and_drawn_from_the_whole_file(model: OnnxModel, tmp_path: Path) -> None:
    rows = 60_000
    frame = pd.DataFrame({name: np.zeros(rows) for name in SPEC.feature_names})
    frame["mean_radius"] = np.arange(
        rows, dtype=float
    )  # a row's place in the file, to see where samples came from
    frame.to_parquet(tmp_path / "in.parquet", row_group_size=5_000)
    result = score(model, tmp_path / "in.parquet", tmp_path / "out", chunk_rows=5_000)
    taken = result.sample.column("mean_radius").to_pandas()
    assert len(taken) == batch.SAMPLE_ROWS and taken.is_unique
    # uniform over the file: each sixth of it holds about a sixth of the sample
    shares = np.histogram(taken, bins=6, range=(0, rows))[0] / batch.SAMPLE_ROWS
    assert np.all(np.abs(shares - 1 / 6) < 0.03), shares


def test_the_model_run_in_slices_answers_as_one_call_over_every_row(
    model: OnnxModel, split: datasets.Split
) -> None:
    feeds = feeds_from_records(datasets.records(split.holdout, SPEC), model.inputs)
    whole = model.run(feeds)
    sliced = batch.run_in_slices(model, feeds, rows=7)  # the holdout is not a multiple of 7 rows
    assert len(sliced) == len(whole)
    for got, expected in zip(sliced, whole, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_the_head_of_a_file_is_its_first_rows_whatever_its_row_groups(
    split: datasets.Split, tmp_path: Path
) -> None:
    frame = pd.concat([split.holdout] * 3, ignore_index=True)
    frame.to_parquet(tmp_path / "in.parquet", row_group_size=200)
    frame.to_csv(tmp_path / "in.csv", index=False)
    for name in ("in.parquet", "in.csv"):
        head = batch.read_head(str(tmp_path / name), 50).to_pandas()
        pd.testing.assert_frame_equal(head[frame.columns], frame.head(50), check_dtype=False)


def test_the_input_digest_is_the_sha256_of_the_file_bytes(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # blocks and a partial one
    (tmp_path / "in.parquet").write_bytes(data)
    assert batch.file_digest(str(tmp_path / "in.parquet")) == hashlib.sha256(data).hexdigest()[:16]
