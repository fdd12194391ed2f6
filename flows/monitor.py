"""Monitoring: drift and live quality of one model version, from its inference log, against its profile.

Reads a time window of the log as a stream (constant memory whatever the window's size, except the
labelled rows when labels are given), and reports per-feature drift (PSI, and a KS test for numbers or a
chi-square test for categories), prediction drift, volume, error rate, latency percentiles, drift over time
slices, and live metrics against the gate's metrics when ground-truth labels are available.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn import metrics as skmetrics

from models.inference_records import feedback_labels, read_records
from models.profile import Drift, LiveProfile

LATENCY_SAMPLE = 10_000
CHUNK_ROWS = 20_000  # memory bound of the stream: this many rows' values at most
SPARK = " ▁▂▃▄▅▆▇█"


class MonitorThresholds(BaseModel):
    """When a window counts as a breach (flow parameters; defaults in prefect.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_rows: int = Field(default=200, ge=1, description="Fewer rows: report, but judge nothing.")
    psi: float = Field(default=0.2, gt=0, description="Per-feature PSI above this is drift.")
    p_value: float = Field(default=0.001, gt=0, lt=1, description="And the KS/chi-square p-value below this.")
    prediction_psi: float = Field(default=0.2, gt=0, description="Prediction PSI above this is drift.")
    max_error_rate: float = Field(default=0.05, ge=0, le=1, description="Refused requests / all requests.")
    latency_p99_ms: float = Field(default=250, gt=0, description="Model time per request, p99.")
    max_metric_drop: float = Field(
        default=0.05, ge=0, description="Live metric worse than the gate's by more (metrics not below)."
    )
    max_regression: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.005, "accuracy": 0.01},
        description="Metric -> the gate's own regression tolerance: a live metric worse than the version's "
        "held-out one by more is a breach (set it to the gate's max_regression).",
    )
    min_labels: int = Field(default=100, ge=1, description="Fewer labelled rows: report live metrics only.")
    label_window_h: float = Field(
        default=72.0, gt=0, description="Labels arriving late count for requests answered this far back."
    )


@dataclass
class _Window:
    requests: int = 0
    errors: int = 0
    rows: int = 0
    latencies: list[float] = field(default_factory=list)
    labelled: list[tuple[Any, Any, list[float] | None]] = field(default_factory=list)


@dataclass
class _Chunk:
    """Columns of up to ``CHUNK_ROWS`` rows, so the profiles take them in a few vectorised steps."""

    inputs: dict[str, list[Any]] = field(default_factory=dict)
    predictions: list[Any] = field(default_factory=list)

    def add(self, inputs: Mapping[str, list[Any]], predictions: list[Any]) -> None:
        for name, values in inputs.items():
            self.inputs.setdefault(name, []).extend(values)
        self.predictions.extend(predictions)

    def flush_into(self, *profiles: LiveProfile) -> None:
        if self.predictions:
            for profile in profiles:
                profile.add_columns(self.inputs, self.predictions)
        self.inputs, self.predictions = {}, []


@dataclass(frozen=True)
class MonitorReport:
    model: str
    version: str
    since: float
    until: float
    requests: int
    rows: int
    errors: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    features: list[Drift]
    prediction: Drift
    slices: list[tuple[float, dict[str, float]]]  # slice start -> feature -> PSI
    live_metrics: dict[str, tuple[float, float | None]]  # metric -> (live, gate)
    breaches: list[str]
    labelled: int = 0  # rows with a ground-truth label the live metrics are computed from

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def drifted(self) -> list[str]:
        return [b.split(":")[0].removeprefix("drift ") for b in self.breaches if b.startswith("drift ")]


def _labels(path: Path | None) -> dict[tuple[str, int], Any]:
    if path is None:
        return {}
    frame = pd.read_parquet(path) if path.suffix in {".parquet", ".pq"} else pd.read_csv(path)
    return {
        (
            str(r),
            int(i),
        ): v
        for r, i, v in zip(frame["request_id"], frame["row"], frame["label"], strict=True)
    }


def _slice_psi(profiles: list[LiveProfile]) -> list[dict[str, float]]:
    return [{d.name: d.psi for d in p.feature_drift()} for p in profiles]


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99)


def live_metrics(
    labelled: list[tuple[Any, Any, list[float] | None]], task: str, gate: Mapping[str, float]
) -> dict[str, tuple[float, float | None]]:
    if not labelled:
        return {}
    truth = [t for t, _, _ in labelled]
    predicted = [p for _, p, _ in labelled]
    if task == "classification":
        scores = {
            "accuracy": skmetrics.accuracy_score(truth, predicted),
            "f1": skmetrics.f1_score(truth, predicted, average="macro"),
        }
        probabilities = [p for _, _, p in labelled if p is not None]
        if len(set(truth)) == 2 and len(probabilities) == len(truth) and len(probabilities[0]) == 2:
            scores["roc_auc"] = skmetrics.roc_auc_score(truth, [p[1] for p in probabilities])
    else:
        scores = {
            "rmse": skmetrics.root_mean_squared_error(truth, predicted),
            "mae": skmetrics.mean_absolute_error(truth, predicted),
            "r2": skmetrics.r2_score(truth, predicted),
        }
    return {name: (float(value), gate.get(name)) for name, value in scores.items()}


def judge(report_parts: dict[str, Any], thresholds: MonitorThresholds) -> list[str]:
    """The breaches, each naming what crossed which threshold."""
    live = judge_live(report_parts["live_metrics"], report_parts.get("labelled", 0), thresholds)
    if report_parts["rows"] < thresholds.min_rows:
        return live  # labels that came late judge requests of earlier windows
    breaches = [
        f"drift {d.name}: PSI {d.psi:.3f} > {thresholds.psi}, {d.test} p={d.p_value:.2g} "
        f"< {thresholds.p_value}"
        for d in report_parts["features"]
        if d.psi > thresholds.psi and d.p_value < thresholds.p_value
    ]
    prediction: Drift = report_parts["prediction"]
    if prediction.psi > thresholds.prediction_psi:
        breaches.append(f"prediction drift: PSI {prediction.psi:.3f} > {thresholds.prediction_psi}")
    if report_parts["error_rate"] > thresholds.max_error_rate:
        breaches.append(f"error rate {report_parts['error_rate']:.2%} > {thresholds.max_error_rate:.0%}")
    p99 = report_parts["latency_p99_ms"]
    if p99 is not None and p99 > thresholds.latency_p99_ms:
        breaches.append(f"latency p99 {p99:.1f} ms > {thresholds.latency_p99_ms} ms")
    return breaches + live


def judge_live(
    metrics: Mapping[str, tuple[float, float | None]], labelled: int, thresholds: MonitorThresholds
) -> list[str]:
    """Live metrics worse than the version's held-out ones beyond the gate's tolerance (``max_regression``;
    ``max_metric_drop`` for the others, relative for error metrics), from ``min_labels`` labelled rows."""
    if labelled < thresholds.min_labels:
        return []
    breaches = []
    for name, (live, gate) in metrics.items():
        if gate is None:
            continue
        higher_is_better = name in {"accuracy", "f1", "roc_auc", "r2"}
        worse = gate - live if higher_is_better else live - gate
        tolerance = thresholds.max_regression.get(name)
        if tolerance is None:
            tolerance = thresholds.max_metric_drop * (1 if higher_is_better else abs(gate))
        if worse > tolerance:
            breaches.append(f"live {name} {live:.4f} vs gate {gate:.4f} ({labelled} labelled rows, "
                            f"tolerance {tolerance:g})")  # fmt: skip
    return breaches


def monitor_window(
    log_dir: Path,
    *,
    model: str,
    version: str,
    profile: dict[str, Any],
    gate_metrics: Mapping[str, float],
    since: float,
    until: float,
    thresholds: MonitorThresholds,
    labels: Path | None = None,
    feedback: Path | None = None,
    slices: int = 6,
) -> MonitorReport:
    """The window ``[since, until)`` of a version's inference log; live metrics over the rows labelled by
    the labels file and the feedback log, for requests answered from ``thresholds.label_window_h`` before
    ``until`` (labels come late)."""
    task = profile["task"]
    labelled = _labels(labels)
    if feedback is not None:
        labelled.update(feedback_labels(feedback, model=model))
    total = LiveProfile(profile)
    per_slice = [LiveProfile(profile, seed=i + 1) for i in range(slices)]
    width = max((until - since) / slices, 1e-9)
    window = _Window()
    rng = np.random.default_rng(0)
    chunks = [_Chunk() for _ in range(slices)]
    flushed = 0
    for record in read_records(log_dir, since=since, until=until, version=version):
        if record.get("probe"):
            continue  # the deploy checks' requests, not consumers'
        window.requests += 1
        if "error" in record:
            window.errors += 1
            continue
        _sample(window.latencies, record["latency_ms"], window.requests, rng)
        buffer = chunks[min(slices - 1, int((record["ts"] - since) / width))]
        buffer.add(record["inputs"], _predictions(record, task))
        window.rows += record["rows"]
        if window.rows - flushed >= CHUNK_ROWS:
            flushed = window.rows
            for chunk, part in zip(chunks, per_slice, strict=True):
                chunk.flush_into(total, part)
        if labelled:
            _join_labels([record], labelled, task, window)
    for chunk, part in zip(chunks, per_slice, strict=True):
        chunk.flush_into(total, part)
    if labelled:  # the requests before the window whose labels came since
        earlier = read_records(
            log_dir, since=until - thresholds.label_window_h * 3600, until=since, version=version
        )
        _join_labels(earlier, labelled, task, window)
    p50, p99 = _percentiles(window.latencies)
    parts: dict[str, Any] = {
        "rows": window.rows,
        "features": total.feature_drift(),
        "prediction": total.prediction_drift(),
        "error_rate": window.errors / window.requests if window.requests else 0.0,
        "latency_p99_ms": p99,
        "live_metrics": live_metrics(window.labelled, task, gate_metrics),
        "labelled": len(window.labelled),
    }
    return MonitorReport(
        model=model,
        version=version,
        since=since,
        until=until,
        requests=window.requests,
        rows=window.rows,
        errors=window.errors,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        features=parts["features"],
        prediction=parts["prediction"],
        slices=list(zip([since + i * width for i in range(slices)], _slice_psi(per_slice), strict=True)),
        live_metrics=parts["live_metrics"],
        labelled=parts["labelled"],
        breaches=judge(parts, thresholds),
    )


def _join_labels(
    records: Iterable[dict[str, Any]], labelled: Mapping[tuple[str, int], Any], task: str, window: _Window
) -> None:
    for record in records:
        if record.get("probe") or "error" in record:  # a shadow's own answers are judged as its version's
            continue
        for row in _rows(record, task):
            key = (record["request_id"], row["row"])
            if key in labelled:
                window.labelled.append((labelled[key], row["prediction"], row["probabilities"]))


def _sample(reservoir: list[float], value: float, seen: int, rng: np.random.Generator) -> None:
    if len(reservoir) < LATENCY_SAMPLE:
        reservoir.append(value)
    elif (slot := int(rng.integers(0, seen))) < LATENCY_SAMPLE:
        reservoir[slot] = value


def _predictions(record: dict[str, Any], task: str) -> list[Any]:
    outputs = record["outputs"]
    values: list[Any] = outputs["label"] if task == "classification" else outputs[next(iter(outputs))]
    return values


def _rows(record: dict[str, Any], task: str) -> Iterator[dict[str, Any]]:
    outputs = record["outputs"]
    names = list(outputs)
    for index in range(record["rows"]):
        if task == "classification":
            prediction = outputs["label"][index]
            probabilities = outputs[names[1]][index] if len(names) > 1 else None
        else:
            prediction, probabilities = outputs[names[0]][index], None
        yield {
            "row": index,
            "inputs": {k: v[index] for k, v in record["inputs"].items()},
            "prediction": prediction,
            "probabilities": probabilities,
        }


# --- the report ------------------------------------------------------------------------------------


def sparkline(values: list[float]) -> str:
    top = max(values, default=0) or 1
    return "".join(SPARK[min(len(SPARK) - 1, math.ceil(v / top * (len(SPARK) - 1)))] for v in values)


def to_markdown(report: MonitorReport) -> str:
    verdict = "BREACH" if report.breaches else "ok"
    lines = [
        f"# Monitor: {report.model} v{report.version}: {verdict}",
        "",
        f"Window {pd.Timestamp(report.since, unit='s'):%Y-%m-%d %H:%M:%S} to "
        f"{pd.Timestamp(report.until, unit='s'):%Y-%m-%d %H:%M:%S} UTC: {report.requests} requests, "
        f"{report.rows} rows, error rate {report.error_rate:.2%}, model time p50 "
        f"{_ms(report.latency_p50_ms)}, p99 {_ms(report.latency_p99_ms)}.",
        "",
    ]
    if report.breaches:
        lines += ["**Breaches:**", "", *[f"- {b}" for b in report.breaches], ""]
    lines += [
        "| feature | PSI | test | p-value | reference | live | PSI over time |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in [*report.features, report.prediction]:
        trend = (
            sparkline([psis.get(d.name, 0.0) for _, psis in report.slices]) if d.name != "prediction" else ""
        )
        lines.append(
            f"| {d.name} | {d.psi:.3f} | {d.test} | {d.p_value:.2g} | `{sparkline(d.reference)}` | "
            f"`{sparkline(d.live)}` | `{trend}` |"
        )
    if report.live_metrics:
        lines += ["", f"Live metrics from {report.labelled} labelled rows (labels file and feedback).", ""]
        lines += ["| live metric | live | gate |", "|---|---|---|"]
        lines += [
            f"| {name} | {live:.4f} | {'-' if gate is None else f'{gate:.4f}'} |"
            for name, (live, gate) in report.live_metrics.items()
        ]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def to_html(report: MonitorReport) -> str:
    """The Markdown summary plus one histogram per feature (reference vs live) and PSI over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    for d in [*report.features, report.prediction]:
        fig, (hist, trend) = plt.subplots(1, 2, figsize=(9, 2.6))
        positions = np.arange(len(d.bins))
        hist.bar(positions - 0.2, d.reference, width=0.4, label="reference")
        hist.bar(positions + 0.2, d.live, width=0.4, label="live")
        hist.set_xticks(positions, d.bins, rotation=45, ha="right", fontsize=6)
        hist.set_title(f"{d.name}: PSI {d.psi:.3f}", fontsize=9)
        hist.legend(fontsize=7)
        if d.name != "prediction":
            trend.plot([psis.get(d.name, 0.0) for _, psis in report.slices], marker="o")
        trend.set_title("PSI over time slices", fontsize=9)
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        figures.append(
            f'<img alt="{d.name}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
        )
    summary = to_markdown(report).replace("&", "&amp;").replace("<", "&lt;")
    return f"<html><body><pre>{summary}</pre>{''.join(figures)}</body></html>"


# --- recording -------------------------------------------------------------------------------------


def record_report(client: Any, settings: Any, report: MonitorReport, triggered: str | None) -> str:
    """The report as an MLflow run in ``<experiment>-monitoring``, pointed at from the version's tags."""
    from flows.tracking import ensure_experiment
    from models.registry import Tag

    experiment_id = ensure_experiment(client, settings, "monitoring")
    run = client.create_run(
        experiment_id,
        run_name=f"monitor-v{report.version}",
        tags={
            "model": report.model,
            "version": report.version,
            "verdict": "breach" if report.breaches else "ok",
            "breaches": "; ".join(report.breaches)[:4900] or "none",
            "triggered_flow_run": triggered or "none",
            "window.since": f"{report.since:.3f}",  # what ``mlops trace`` matches a request's time against
            "window.until": f"{report.until:.3f}",
        },
    )
    run_id = run.info.run_id
    values = {
        "requests": report.requests,
        "rows": report.rows,
        "error_rate": report.error_rate,
        "prediction_psi": report.prediction.psi,
        **{f"psi.{d.name}": d.psi for d in report.features},
        **{f"live.{name}": live for name, (live, _) in report.live_metrics.items()},
        "live.labelled_rows": report.labelled,
    }
    if report.latency_p99_ms is not None:
        values["latency_p99_ms"] = report.latency_p99_ms
    for key, value in values.items():
        client.log_metric(run_id, key, float(value))
    client.log_text(run_id, to_markdown(report), "report.md")
    client.log_text(run_id, to_html(report), "report.html")
    client.set_terminated(run_id)
    verdict = "breach" if report.breaches else "ok"
    client.set_model_version_tag(report.model, report.version, Tag.MONITOR_LAST, f"{verdict}: run {run_id}")
    return str(run_id)
