from pathlib import Path

import pandas as pd
import pytest

from models import datasets


def test_breast_cancer_matches_its_spec(breast_cancer: pd.DataFrame) -> None:
    spec = datasets.BREAST_CANCER
    assert list(breast_cancer.columns) == [*spec.feature_names, spec.target]
    assert len(breast_cancer) == 569
    assert set(breast_cancer[spec.target]) == set(spec.target_values)


def test_snake_case_normalises_column_names() -> None:
    assert datasets.snake_case(" mean concave points ") == "mean_concave_points"
    assert datasets.snake_case("Area (mm^2)") == "area_mm_2"


def test_digest_is_stable_and_sensitive_to_values(breast_cancer: pd.DataFrame) -> None:
    assert datasets.digest(breast_cancer) == datasets.digest(breast_cancer.copy())
    changed = breast_cancer.copy()
    changed.iloc[0, 0] += 1e-9
    assert datasets.digest(changed) != datasets.digest(breast_cancer)
    assert datasets.digest(breast_cancer.iloc[::-1]) != datasets.digest(breast_cancer)


def test_split_is_deterministic_and_stratified(breast_cancer: pd.DataFrame) -> None:
    first = datasets.split(breast_cancer, datasets.BREAST_CANCER)
    second = datasets.split(breast_cancer, datasets.BREAST_CANCER)
    pd.testing.assert_frame_equal(first.holdout, second.holdout)
    assert len(first.train) + len(first.holdout) == len(breast_cancer)
    overall = breast_cancer["target"].mean()
    assert abs(first.y_holdout.mean() - overall) < 0.02


def test_load_frame_reads_csv_and_parquet(tmp_path: Path, breast_cancer: pd.DataFrame) -> None:
    csv, parquet = tmp_path / "d.csv", tmp_path / "d.parquet"
    breast_cancer.to_csv(csv, index=False)
    breast_cancer.to_parquet(parquet)
    pd.testing.assert_frame_equal(datasets.load_frame(str(parquet)), breast_cancer)
    assert datasets.load_frame(str(csv)).shape == breast_cancer.shape


@pytest.mark.parametrize(
    ("source", "message"),
    [("demo:nope", "unknown demo dataset"), ("/no/such/file.csv", "is not a file")],
)
def test_load_frame_names_what_is_wrong(source: str, message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        datasets.load_frame(source)


def test_load_frame_refuses_other_file_types(tmp_path: Path) -> None:
    other = tmp_path / "data.txt"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"expected a \.csv or \.parquet file"):
        datasets.load_frame(str(other))


def test_records_are_json_ready(split: datasets.Split) -> None:
    rows = datasets.records(split.holdout.head(2), datasets.BREAST_CANCER)
    assert len(rows) == 2
    assert list(rows[0]) == datasets.BREAST_CANCER.feature_names
    assert all(type(v) is float for v in rows[0].values())


def test_get_spec_names_the_choices() -> None:
    with pytest.raises(ValueError, match="breast_cancer"):
        datasets.get_spec("unknown")
