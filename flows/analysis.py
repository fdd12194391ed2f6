"""A release window's analysis: the challenger against the champion on live traffic, from the inference log.

For one window (``since`` to ``until``) of consumers' requests (a check's probes left out): the champion's
answers, and the challenger's, as the ``canary`` (answering its share of requests) or the ``shadow`` (its
copies of the champion's requests, under the same request ids). Checks, each with value, threshold and
verdict as the promotion gate's, thresholds from ``GateConfig.live``:

- ``live.requests``: the challenger took at least ``min_requests`` requests (no evidence is a fail: a
  version no worker could load, or refused by the workers' self-test, never answers);
- ``live.error_rate``: its share of errors, at most the champion's plus ``max_error_rate_increase``;
- ``live.p99_ms``: its p99 model time, at most the champion's times ``max_p99_ratio`` plus ``p99_slack_ms``;
- ``live.agreement`` (shadow: the same requests): the share of rows whose label equals the champion's
  (classification), or whose value is within ``regression_tolerance`` of it, at least ``min_agreement``; with
  ``live.probability_distance``, the mean absolute difference of the probabilities, at most
  ``max_probability_distance``;
- ``live.prediction_psi``: the PSI between the two versions' predictions in the window (labels' shares, or
  the champion's quintiles for a regression), at most ``max_prediction_psi``;
- ``live.quality``: where feedback labels came for the window's requests, the challenger's accuracy (or
  mean absolute error) on its labelled rows against the champion's on theirs, no worse than
  ``max_quality_drop`` (relative for an error), judged from ``min_labels`` labelled rows on each side;
- ``live.input_psi`` (canary: its own requests): the largest PSI over the features of the inputs it received
  against the champion's, at most ``max_input_psi`` (its requests a fair sample of the traffic).

The two distribution checks are judged from ``min_distribution_rows`` rows on each side; below that they
are shown as not judged (a small sample's PSI is mostly noise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flows.gate import Check, GateResult, LiveThresholds
from models.profile import psi
from models.registry import CANARY, SHADOW


@dataclass
class Side:
    """One version's requests in the window."""

    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list)
    inputs: dict[str, list[Any]] = field(default_factory=dict)
    by_request: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any]) -> None:
        self.requests += 1
        if "error" in record:
            self.errors += 1
            return
        self.latencies.append(float(record["latency_ms"]))
        self.predictions.extend(predictions_of(record))
        for name, values in record.get("inputs", {}).items():
            self.inputs.setdefault(name, []).extend(values)
        self.by_request[str(record["request_id"])] = dict(record["outputs"])

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p50_ms(self) -> float | None:
        return float(np.percentile(self.latencies, 50)) if self.latencies else None

    @property
    def p99_ms(self) -> float | None:
        return float(np.percentile(self.latencies, 99)) if self.latencies else None


def is_classification(outputs: Mapping[str, Any]) -> bool:
    return "label" in outputs


def predictions_of(record: Mapping[str, Any]) -> list[Any]:
    outputs = record["outputs"]
    values: list[Any] = outputs["label"] if is_classification(outputs) else outputs[next(iter(outputs))]
    return values


def split_window(
    records: Iterable[Mapping[str, Any]], champion: str, challenger: str, role: str
) -> tuple[Side, Side]:
    """The champion's answers and the challenger's (its role's records only) among consumers' requests."""
    ours, theirs = Side(), Side()
    for record in records:
        if record.get("probe") or record.get("route") == "batch":
            continue
        version, record_role = record.get("version"), record.get("role")
        if version == champion and record_role is None:
            ours.add(record)
        elif version == challenger and record_role == role:
            theirs.add(record)
    return ours, theirs


def _distribution(values: list[Any], reference: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Shares of the two sets of values over the same bins: labels, or the reference's quintiles (few bins:
    a window's sample is small, and a PSI over ten bins of 50 values is mostly noise)."""
    if all(isinstance(v, (str, int)) for v in reference[:100]):
        labels = sorted({*map(str, reference), *map(str, values)})
        ref = np.array([sum(str(v) == label for v in reference) for label in labels], dtype=float)
        cur = np.array([sum(str(v) == label for v in values) for label in labels], dtype=float)
    else:
        edges = np.unique(np.quantile(np.asarray(reference, dtype=float), np.linspace(0.2, 0.8, 4)))
        ref = np.bincount(np.searchsorted(edges, reference), minlength=len(edges) + 1).astype(float)
        cur = np.bincount(np.searchsorted(edges, values), minlength=len(edges) + 1).astype(float)
    return ref / max(ref.sum(), 1.0), cur / max(cur.sum(), 1.0)


def agreement(ours: Side, theirs: Side, tolerance: float) -> tuple[int, float, float | None]:
    """Rows of the requests both answered: how many, the share that agree, the mean probability distance."""
    rows = agreeing = 0
    distances: list[float] = []
    for request_id, outputs in theirs.by_request.items():
        mine = ours.by_request.get(request_id)
        if mine is None:
            continue
        names = list(outputs)
        if is_classification(outputs):
            for a, b in zip(mine["label"], outputs["label"], strict=False):
                rows += 1
                agreeing += a == b
            if len(names) > 1 and names[1] in mine:
                for p, q in zip(mine[names[1]], outputs[names[1]], strict=False):
                    distances.append(float(np.mean(np.abs(np.ravel(p) - np.ravel(q)))))
        else:
            for a, b in zip(mine[names[0]], outputs[names[0]], strict=False):
                rows += 1
                scale = max(abs(float(a)), 1e-9)
                agreeing += abs(float(a) - float(b)) / scale <= tolerance
    share = agreeing / rows if rows else 0.0
    return rows, share, (float(np.mean(distances)) if distances else None)


def labelled_quality(side: Side, labels: Mapping[tuple[str, int], Any]) -> tuple[int, float | None, bool]:
    """(labelled rows, accuracy or mean absolute error on them, whether it is an accuracy)."""
    hits: list[float] = []
    classification = True
    for request_id, outputs in side.by_request.items():
        classification = is_classification(outputs)
        values = outputs["label"] if classification else outputs[next(iter(outputs))]
        for row, value in enumerate(values):
            truth = labels.get((request_id, row))
            if truth is not None:
                hits.append(float(value == truth) if classification else abs(float(value) - float(truth)))
    return len(hits), (float(np.mean(hits)) if hits else None), classification


def quality_check(
    ours: Side, theirs: Side, labels: Mapping[tuple[str, int], Any], live: LiveThresholds
) -> Check:
    mine, champion_value, classification = labelled_quality(ours, labels)
    rows, value, _ = labelled_quality(theirs, labels)
    name = "accuracy" if classification else "mean absolute error"
    if value is None or champion_value is None or min(rows, mine) < live.min_labels:
        return Check("live.quality", f"not judged: {min(rows, mine)} labelled rows",
                     f"judged from {live.min_labels} labelled rows a side", True)  # fmt: skip
    if classification:
        floor = champion_value - live.max_quality_drop
        return Check("live.quality", f"{name} {value:.4f} (champion {champion_value:.4f})", f">= {floor:.4f}",
                     value >= floor)  # fmt: skip
    ceiling = champion_value * (1 + live.max_quality_drop)
    return Check("live.quality", f"{name} {value:.4f} (champion {champion_value:.4f})", f"<= {ceiling:.4f}",
                 value <= ceiling)  # fmt: skip


def analyse(
    records: Iterable[Mapping[str, Any]],
    champion: str,
    challenger: str,
    role: str,
    live: LiveThresholds,
    labels: Mapping[tuple[str, int], Any] | None = None,
) -> tuple[GateResult, dict[str, float]]:
    """The window's checks and its figures (for the release's MLflow run)."""
    if role not in (CANARY, SHADOW):
        raise ValueError(f"role: {role!r} is not {CANARY!r} or {SHADOW!r}")
    ours, theirs = split_window(records, champion, challenger, role)
    figures: dict[str, float] = {
        "champion.requests": ours.requests,
        "challenger.requests": theirs.requests,
        "champion.error_rate": ours.error_rate,
        "challenger.error_rate": theirs.error_rate,
    }
    checks = [
        Check(
            "live.requests",
            str(theirs.requests),
            f">= {live.min_requests}",
            theirs.requests >= live.min_requests,
        )
    ]
    budget = ours.error_rate + live.max_error_rate_increase
    checks.append(
        Check("live.error_rate", f"{theirs.error_rate:.4f}", f"<= {budget:.4f}", theirs.error_rate <= budget)
    )
    p99, champion_p99 = theirs.p99_ms, ours.p99_ms
    if p99 is not None and champion_p99 is not None:
        limit = champion_p99 * live.max_p99_ratio + live.p99_slack_ms
        figures.update({"champion.p99_ms": champion_p99, "challenger.p99_ms": p99})
        figures.update({"champion.p50_ms": ours.p50_ms or 0.0, "challenger.p50_ms": theirs.p50_ms or 0.0})
        checks.append(Check("live.p99_ms", f"{p99:.2f}", f"<= {limit:.2f}", p99 <= limit))
    else:
        checks.append(Check("live.p99_ms", "no answers", "answers from both", False))
    if role == SHADOW:
        rows, share, distance = agreement(ours, theirs, live.regression_tolerance)
        figures.update({"agreement.rows": rows, "agreement": share})
        checks.append(Check("live.agreement", f"{share:.4f} of {rows} rows", f">= {live.min_agreement}",
                            rows > 0 and share >= live.min_agreement))  # fmt: skip
        if distance is not None:
            figures["probability_distance"] = distance
            checks.append(
                Check("live.probability_distance", f"{distance:.4f}", f"<= {live.max_probability_distance}",
                      distance <= live.max_probability_distance)
            )  # fmt: skip
    rows = min(len(ours.predictions), len(theirs.predictions))
    if rows >= live.min_distribution_rows:
        reference, current = _distribution(theirs.predictions, ours.predictions)
        value = psi(reference, current)
        figures["prediction_psi"] = value
        checks.append(
            Check("live.prediction_psi", f"{value:.4f}", f"<= {live.max_prediction_psi}",
                  math.isfinite(value) and value <= live.max_prediction_psi)
        )  # fmt: skip
    else:  # too small a sample to tell a shift from noise: shown, not judged
        checks.append(Check("live.prediction_psi", f"not judged: {rows} rows",
                            f"judged from {live.min_distribution_rows} rows", True))  # fmt: skip
    if role == CANARY and rows >= live.min_distribution_rows:  # a shadow's inputs are the champion's own
        drift = input_psi(ours, theirs)
        if drift:
            feature, value = max(drift.items(), key=lambda item: item[1])
            figures["input_psi"] = value
            checks.append(
                Check("live.input_psi", f"{value:.4f} ({feature})", f"<= {live.max_input_psi}",
                      math.isfinite(value) and value <= live.max_input_psi)
            )  # fmt: skip
    checks.append(quality_check(ours, theirs, labels or {}, live))
    return GateResult(tuple(checks)), figures


def input_psi(ours: Side, theirs: Side) -> dict[str, float]:
    """Per feature, the PSI of the inputs the challenger received against the champion's in the window."""
    found: dict[str, float] = {}
    for name, reference in ours.inputs.items():
        values = [v for v in theirs.inputs.get(name, []) if v is not None]
        reference = [v for v in reference if v is not None]
        if values and reference:
            ref, cur = _distribution(values, reference)
            found[name] = psi(ref, cur)
    return found
