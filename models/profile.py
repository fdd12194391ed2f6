"""Reference profiles and drift statistics: what the training data looked like, and how far live data is.

A profile holds, per feature, the bins (numeric: deciles of the training data) with their proportions and a
fixed-size sample (for the two-sample Kolmogorov-Smirnov test), or the category proportions (categorical);
and the same for the model's predictions. Live data is accumulated into the same bins by ``LiveProfile``
one record at a time, so a window of any size is read in constant memory.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from models.datasets import DatasetSpec

BINS = 10
SAMPLE = 2000
OTHER = "__other__"
EPSILON = 1e-4  # floor for empty bins in PSI


def _numeric_profile(values: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1))[1:-1])
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    sample = rng.choice(values, size=min(SAMPLE, len(values)), replace=False)
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "proportions": (counts / counts.sum()).tolist(),
        "sample": np.sort(sample).tolist(),
        "mean": float(values.mean()),
        "std": float(values.std()),
    }


def _categorical_profile(values: Iterable[Any]) -> dict[str, Any]:
    counts = Counter(str(v) for v in values)
    total = sum(counts.values())
    return {"kind": "categorical", "proportions": {k: v / total for k, v in sorted(counts.items())}}


def build_profile(
    frame: pd.DataFrame, spec: DatasetSpec, predictions: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    features = {
        f.name: _numeric_profile(frame[f.name].to_numpy(dtype=float), rng)
        if f.kind == "numeric"
        else _categorical_profile(frame[f.name])
        for f in spec.features
    }
    preds = np.asarray(predictions).ravel()
    prediction = (
        _categorical_profile(preds)
        if spec.task == "classification"
        else _numeric_profile(preds.astype(float), rng)
    )
    return {
        "dataset": spec.name,
        "task": spec.task,
        "rows": len(frame),
        "features": features,
        "prediction": prediction,
    }


@dataclass
class _Accumulator:
    reference: dict[str, Any]
    counts: Counter[Any] = field(default_factory=Counter)
    sample: list[float] = field(default_factory=list)
    seen: int = 0

    def add_many(self, values: list[Any], rng: np.random.Generator) -> None:
        """Add a column of values (one record's rows) in one vectorised step."""
        if not values:
            return
        if self.reference["kind"] == "numeric":
            numbers = np.asarray(values, dtype=float)
            bins = np.searchsorted(self.reference["edges"], numbers, side="right")
            for index, count in zip(*np.unique(bins, return_counts=True), strict=True):
                self.counts[int(index)] += int(count)
            self._reservoir(numbers, rng)
        else:
            known = self.reference["proportions"]
            self.counts.update(key if key in known else OTHER for key in map(str, values))
        self.seen += len(values)

    def _reservoir(self, numbers: np.ndarray, rng: np.random.Generator) -> None:
        """Uniform sample of everything seen so far, in constant memory (algorithm R, vectorised)."""
        room = max(0, SAMPLE - len(self.sample))
        self.sample.extend(numbers[:room].tolist())
        rest = numbers[room:]
        if rest.size:
            positions = self.seen + room + np.arange(1, rest.size + 1)
            slots = rng.integers(0, positions)
            for slot, value in zip(slots[slots < SAMPLE], rest[slots < SAMPLE], strict=True):
                self.sample[int(slot)] = float(value)

    def proportions(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Reference and live proportions over the same bins, and the bins' names."""
        if self.reference["kind"] == "numeric":
            bins = len(self.reference["edges"]) + 1
            live = np.array([self.counts.get(i, 0) for i in range(bins)], dtype=float)
            names = _bin_names(self.reference["edges"])
            return np.asarray(self.reference["proportions"]), live / max(1.0, live.sum()), names
        names = [*self.reference["proportions"], OTHER]
        ref = np.array([self.reference["proportions"].get(n, 0.0) for n in names])
        live = np.array([self.counts.get(n, 0) for n in names], dtype=float)
        return ref, live / max(1.0, live.sum()), names


def _bin_names(edges: list[float]) -> list[str]:
    bounds = ["-inf", *(f"{e:.3g}" for e in edges), "inf"]
    return [f"({lo}, {hi}]" for lo, hi in itertools.pairwise(bounds)]


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """Population stability index over shared bins (empty bins floored at ``EPSILON``)."""
    ref = np.maximum(reference, EPSILON)
    cur = np.maximum(live, EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


@dataclass(frozen=True)
class Drift:
    name: str
    kind: str
    rows: int
    psi: float
    test: str
    p_value: float
    bins: list[str]
    reference: list[float]
    live: list[float]


class LiveProfile:
    """Accumulates live feature values and predictions, one row at a time, against a reference profile."""

    def __init__(self, reference: dict[str, Any], seed: int = 0) -> None:
        self.reference = reference
        self.rng = np.random.default_rng(seed)
        self.features = {name: _Accumulator(profile) for name, profile in reference["features"].items()}
        self.prediction = _Accumulator(reference["prediction"])

    def add(self, inputs: Mapping[str, Any], prediction: Any) -> None:
        """One row."""
        self.add_columns({name: [value] for name, value in inputs.items()}, [prediction])

    def add_columns(self, inputs: Mapping[str, list[Any]], predictions: list[Any]) -> None:
        """Many rows at once, as the inference log stores them (feature -> values)."""
        for name, accumulator in self.features.items():
            accumulator.add_many(inputs[name], self.rng)
        self.prediction.add_many(predictions, self.rng)

    def _drift(self, name: str, accumulator: _Accumulator) -> Drift:
        ref, live, bins = accumulator.proportions()
        if accumulator.reference["kind"] == "numeric":
            test = "ks"
            p_value = (
                float(stats.ks_2samp(accumulator.reference["sample"], accumulator.sample).pvalue)
                if accumulator.sample
                else math.nan
            )
        else:
            test = "chi2"
            observed = live * accumulator.seen
            expected = np.maximum(ref, EPSILON)
            expected = expected / expected.sum() * accumulator.seen
            p_value = float(stats.chisquare(observed, expected).pvalue) if accumulator.seen else math.nan
        return Drift(name, accumulator.reference["kind"], accumulator.seen, psi(ref, live), test, p_value,
                     bins, ref.tolist(), live.tolist())  # fmt: skip

    def feature_drift(self) -> list[Drift]:
        return [self._drift(name, accumulator) for name, accumulator in self.features.items()]

    def prediction_drift(self) -> Drift:
        return self._drift("prediction", self.prediction)
