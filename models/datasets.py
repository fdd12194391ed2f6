"""What the data is: dataset specifications, loading, the train/holdout split and a content digest."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

FeatureKind = Literal["numeric", "categorical"]
Task = Literal["classification", "regression"]

DEMO_PREFIX = "demo:"


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: FeatureKind = "numeric"
    min_value: float | None = None
    max_value: float | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: Task
    target: str
    features: tuple[FeatureSpec, ...]
    target_values: tuple[int | str, ...] = ()
    min_rows: int = 50
    description: str = ""

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    spec: DatasetSpec = field(repr=False)

    @property
    def x_train(self) -> pd.DataFrame:
        return self.train[self.spec.feature_names]

    @property
    def y_train(self) -> pd.Series:
        return self.train[self.spec.target]

    @property
    def x_holdout(self) -> pd.DataFrame:
        return self.holdout[self.spec.feature_names]

    @property
    def y_holdout(self) -> pd.Series:
        return self.holdout[self.spec.target]


def snake_case(name: str) -> str:
    return re.sub(r"\W+", "_", name.strip()).strip("_").lower()


def _breast_cancer_frame() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    return bunch.frame.rename(columns=snake_case)


BREAST_CANCER_FEATURES = [
    "mean_radius",
    "mean_texture",
    "mean_perimeter",
    "mean_area",
    "mean_smoothness",
    "mean_compactness",
    "mean_concavity",
    "mean_concave_points",
    "mean_symmetry",
    "mean_fractal_dimension",
    "radius_error",
    "texture_error",
    "perimeter_error",
    "area_error",
    "smoothness_error",
    "compactness_error",
    "concavity_error",
    "concave_points_error",
    "symmetry_error",
    "fractal_dimension_error",
    "worst_radius",
    "worst_texture",
    "worst_perimeter",
    "worst_area",
    "worst_smoothness",
    "worst_compactness",
    "worst_concavity",
    "worst_concave_points",
    "worst_symmetry",
    "worst_fractal_dimension",
]

BREAST_CANCER = DatasetSpec(
    name="breast_cancer",
    task="classification",
    target="target",
    features=tuple(FeatureSpec(n, "numeric", min_value=0.0) for n in BREAST_CANCER_FEATURES),
    target_values=(0, 1),
    min_rows=100,
    description="Wisconsin diagnostic breast cancer (scikit-learn bundled); target 1 = benign.",
)

SPECS: dict[str, DatasetSpec] = {BREAST_CANCER.name: BREAST_CANCER}
_DEMO_LOADERS = {BREAST_CANCER.name: _breast_cancer_frame}


def get_spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SPECS)}") from None


def demo_source(dataset: str) -> str:
    return f"{DEMO_PREFIX}{dataset}"


def load_frame(source: str) -> pd.DataFrame:
    """Load a table from ``demo:<dataset>`` (bundled) or a CSV/Parquet path."""
    if source.startswith(DEMO_PREFIX):
        name = source.removeprefix(DEMO_PREFIX)
        if name not in _DEMO_LOADERS:
            raise ValueError(f"unknown demo dataset {name!r}; expected one of {sorted(_DEMO_LOADERS)}")
        return _DEMO_LOADERS[name]()
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"data source {source!r} is not a file")
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"data source {source!r}: expected a .csv or .parquet file")


def digest(frame: pd.DataFrame) -> str:
    """A content digest of a table: same columns and values in the same order give the same digest."""
    hasher = hashlib.sha256()
    hasher.update("\x1f".join(map(str, frame.columns)).encode())
    hasher.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return hasher.hexdigest()[:16]


def split(frame: pd.DataFrame, spec: DatasetSpec, holdout_fraction: float = 0.25, seed: int = 0) -> Split:
    """Deterministic split; stratified on the target for classification."""
    from sklearn.model_selection import train_test_split

    stratify = frame[spec.target] if spec.task == "classification" else None
    train, holdout = train_test_split(frame, test_size=holdout_fraction, random_state=seed, stratify=stratify)
    return Split(train=train.reset_index(drop=True), holdout=holdout.reset_index(drop=True), spec=spec)


def records(frame: pd.DataFrame, spec: DatasetSpec) -> list[dict[str, float | str]]:
    """Rows as JSON-ready feature records, in the spec's column order."""
    features = frame[spec.feature_names]
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in features.to_dict(orient="records")
    ]
