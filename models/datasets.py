"""What the data is: dataset specifications, loading, the train/holdout split and a content digest.

pandas is imported where a table is made: a batch worker needs the specifications only (45 MiB less each).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

FeatureKind = Literal["numeric", "categorical"]
Task = Literal["classification", "regression"]

DEMO_PREFIX = "demo:"


class UnreadableDataError(ValueError):
    """The data source is a file, but not a table this project can read (empty, binary, another format)."""


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
    # Data-quality thresholds of the validation stage (flows/validate.py):
    allow_extra_columns: bool = False  # columns beyond the features and the target fail the schema check
    max_duplicate_share: float = 0.05  # share of rows that repeat another row in full
    max_single_feature_score: float = 0.99  # one feature alone predicting the target this well is leakage

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

PLANS = ("basic", "standard", "premium")
REGIONS = ("north", "south", "east", "west")
CONTRACTS = ("monthly", "yearly")
NEIGHBOURHOODS = ("centre", "riverside", "hills", "suburb", "industrial")
BUILDING_TYPES = ("flat", "terraced", "detached")


def _churn_frame(rows: int = 3000, seed: int = 20261121) -> pd.DataFrame:
    import pandas as pd

    """Synthetic telecom churn: numbers and strings, generated the same way every time."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(PLANS, rows, p=[0.5, 0.3, 0.2])
    region = rng.choice(REGIONS, rows)
    contract = rng.choice(CONTRACTS, rows, p=[0.6, 0.4])
    tenure = rng.integers(1, 73, rows).astype(float)
    calls = rng.poisson(1.5, rows).astype(float)
    charges = np.select([plan == "basic", plan == "standard"], [25.0, 45.0], 80.0) + rng.normal(0, 6, rows)
    logit = (
        -0.8
        + 0.7 * calls
        - 0.045 * tenure
        + 0.015 * (charges - 45)
        - 1.4 * (contract == "yearly")
        + 0.5 * (region == "south")
        - 0.3 * (plan == "premium")
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges.round(2),
            "support_calls": calls,
            "plan": plan,
            "region": region,
            "contract": contract,
            "churned": churned,
        }
    )


def _housing_frame(rows: int = 3000, seed: int = 20261122) -> pd.DataFrame:
    import pandas as pd

    """Synthetic house prices (in thousands): a regression target over numbers and strings."""
    rng = np.random.default_rng(seed)
    neighbourhood = rng.choice(NEIGHBOURHOODS, rows)
    building = rng.choice(BUILDING_TYPES, rows, p=[0.5, 0.3, 0.2])
    area = rng.gamma(9.0, 10.0, rows).round(1) + 20
    rooms = np.clip((area / 25 + rng.normal(0, 0.8, rows)).round(), 1, None)
    age = rng.integers(0, 120, rows).astype(float)
    premium = {"centre": 1.6, "riverside": 1.35, "hills": 1.2, "suburb": 1.0, "industrial": 0.75}
    kind = {"flat": 0.9, "terraced": 1.0, "detached": 1.25}
    price = (2.2 * area + 12 * rooms - 0.35 * age + 40) * np.vectorize(premium.get)(
        neighbourhood
    ) * np.vectorize(kind.get)(building) + rng.normal(0, 15, rows)
    return pd.DataFrame(
        {
            "area_sqm": area,
            "rooms": rooms,
            "age_years": age,
            "neighbourhood": neighbourhood,
            "building_type": building,
            "price_k": price.round(1),
        }
    )


CHURN = DatasetSpec(
    name="churn",
    task="classification",
    target="churned",
    features=(
        FeatureSpec("tenure_months", "numeric", min_value=0, max_value=600),
        FeatureSpec("monthly_charges", "numeric", min_value=0, max_value=10_000),
        FeatureSpec("support_calls", "numeric", min_value=0, max_value=1_000),
        FeatureSpec("plan", "categorical", categories=PLANS),
        FeatureSpec("region", "categorical", categories=REGIONS),
        FeatureSpec("contract", "categorical", categories=CONTRACTS),
    ),
    target_values=(0, 1),
    min_rows=200,
    description="Synthetic telecom churn with numeric and categorical columns (generated in the repo).",
)

HOUSING = DatasetSpec(
    name="housing",
    task="regression",
    target="price_k",
    features=(
        FeatureSpec("area_sqm", "numeric", min_value=5, max_value=5_000),
        FeatureSpec("rooms", "numeric", min_value=1, max_value=100),
        FeatureSpec("age_years", "numeric", min_value=0, max_value=1_000),
        FeatureSpec("neighbourhood", "categorical", categories=NEIGHBOURHOODS),
        FeatureSpec("building_type", "categorical", categories=BUILDING_TYPES),
    ),
    min_rows=200,
    description="Synthetic house prices (thousands), numeric and categorical columns, generated in the repo.",
)

SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (BREAST_CANCER, CHURN, HOUSING)}
_DEMO_LOADERS = {
    BREAST_CANCER.name: _breast_cancer_frame,
    CHURN.name: _churn_frame,
    HOUSING.name: _housing_frame,
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SPECS)}") from None


def demo_source(dataset: str) -> str:
    return f"{DEMO_PREFIX}{dataset}"


def load_frame(source: str) -> pd.DataFrame:
    """Load a table from ``demo:<dataset>`` (bundled) or a CSV/Parquet path."""
    import pandas as pd

    if source.startswith(DEMO_PREFIX):
        name = source.removeprefix(DEMO_PREFIX)
        if name not in _DEMO_LOADERS:
            raise ValueError(f"unknown demo dataset {name!r}; expected one of {sorted(_DEMO_LOADERS)}")
        return _DEMO_LOADERS[name]()
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"data source {source!r} is not a file")
    suffix = path.suffix.lower()
    if suffix not in {".parquet", ".pq", ".csv"}:
        raise UnreadableDataError(f"data source {source!r}: expected a .csv or .parquet file")
    if path.stat().st_size == 0:
        raise UnreadableDataError(f"data source {source!r} is an empty file")
    try:
        return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (ValueError, OSError) as exc:  # parser errors, UnicodeDecodeError, Arrow's: all ValueErrors
        problem = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise UnreadableDataError(
            f"data source {source!r} is not a readable {suffix.lstrip('.')} table: "
            f"{type(exc).__name__}: {problem}"
        ) from None


def digest(frame: pd.DataFrame) -> str:
    """A content digest of a table: same columns and values in the same order give the same digest."""
    import pandas as pd

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
