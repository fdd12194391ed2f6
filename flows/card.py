"""The model card: a version's technical documentation (EU AI Act Annex IV style), from the registry's facts.

Three steps, each its own function, so the document can be regenerated at any later time from MLflow alone
(no in-memory object of the training pipeline):

- ``collect`` reads the facts: the version's tags (lineage, gate checks, promotion, release, deployment,
  monitor), its training run (params, held-out metrics, tags, dataset inputs), the release, deployment and
  monitoring runs about it, the promotions that replaced it, and the monitoring plan of ``prefect.yaml``;
- ``render`` (pure) writes the Markdown document from them;
- ``publish`` logs it to the version's run (``model_card.md``, plus a dated copy under ``model_card/``),
  points ``Tag.MODEL_CARD`` at it and sets the version's description to a short summary for the UI.

``regenerate`` does all three; ``refresh`` is what a flow calls after it changed a version's record
(release, rollback, promotion): a failure there is a warning, never the flow's failure.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Run

from flows.gate import LiveThresholds
from flows.monitor import MonitorThresholds
from flows.rollout import HISTORY_TAG
from flows.tracking import PROJECT_ROOT
from models import datasets
from models.datasets import DatasetSpec
from models.recipes import RECIPES, Recipe
from models.registry import MODEL_CARD_ARTIFACT, VALIDATION_ARTIFACT, Tag
from models.settings import Settings

ARCHIVE_FOLDER = "model_card"  # every generated document is also kept here, dated
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
MONITOR_RUNS_SHOWN = 5
log = logging.getLogger(__name__)


# --- the facts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateCheck:
    name: str
    verdict: str  # "pass" or "fail"
    value: str
    threshold: str


@dataclass(frozen=True)
class DataInput:
    """A dataset the training run logged as input (MLflow's dataset tracking)."""

    context: str  # "training" or "holdout"
    name: str
    digest: str
    source_type: str
    rows: int | None


@dataclass(frozen=True)
class Expectations:
    """One kind of expectation of the data validation's report: how many passed of how many, and failures."""

    expectation: str
    passed: int
    total: int
    failed: tuple[str, ...] = ()  # "<column>: <observed>" of each failure


@dataclass(frozen=True)
class Promotion:
    decision: str  # "approved" or "rejected"
    by: str
    reason: str
    at: str
    forced_by: str | None
    previous: str | None  # the champion it replaced ("none": there was none)


@dataclass(frozen=True)
class Event:
    """One entry of the version's history: when, what kind, what happened, and the record that says so."""

    at: str
    kind: str
    summary: str
    record: str = ""


@dataclass(frozen=True)
class MonitoringPlan:
    """What watches the version once it serves, with the thresholds as deployed (or the defaults)."""

    source: str
    drift: MonitorThresholds = field(default_factory=MonitorThresholds)
    live: LiveThresholds = field(default_factory=LiveThresholds)
    monitor_schedule: str = "not scheduled"
    window_minutes: float = 60.0
    retrain: bool = False
    release_strategy: str = "canary"
    release_steps: tuple[float, ...] = (5.0, 25.0, 50.0)
    bake_s: float = 30.0


@dataclass(frozen=True)
class VersionFacts:
    model_name: str
    version: str
    run_id: str
    experiment_id: str
    registered_at: str
    aliases: tuple[str, ...]
    live_history: tuple[str, ...]  # the versions proven live, oldest first (the registered model's tag)
    generated_at: str
    event: str  # what the document was (re)generated after
    tags: Mapping[str, str]  # the version's tags, as read
    params: Mapping[str, str]  # the training run's
    metrics: Mapping[str, float]  # held-out, without the ``holdout_`` prefix
    spec: DatasetSpec | None
    recipe: Recipe | None
    inputs: tuple[DataInput, ...]
    expectations: tuple[Expectations, ...]  # from the run's validation report; () where it has none
    checks: tuple[GateCheck, ...]
    promotion: Promotion | None
    history: tuple[Event, ...]
    monitor_runs: tuple[Event, ...]
    plan: MonitoringPlan

    def tag(self, key: str, default: str = "not recorded") -> str:
        return self.tags.get(key, default)

    @property
    def gate_verdict(self) -> str:
        return self.tag(Tag.GATE_VERDICT, "not gated")

    @property
    def card_uri(self) -> str:
        return f"runs:/{self.run_id}/{MODEL_CARD_ARTIFACT}"


def parse_check(name: str, text: str) -> GateCheck:
    """A ``gate.check.<name>`` tag as the gate writes it: ``pass: <value> (threshold <threshold>)``."""
    verdict, _, rest = text.partition(": ")
    value, _, threshold = rest.rpartition(" (threshold ")
    if not _:
        return GateCheck(name, verdict, rest, "")
    return GateCheck(name, verdict, value, threshold.removesuffix(")"))


def gate_checks(tags: Mapping[str, str]) -> tuple[GateCheck, ...]:
    prefix = Tag.gate_check("")
    return tuple(
        parse_check(key.removeprefix(prefix), value)
        for key, value in sorted(tags.items())
        if key.startswith(prefix)
    )


def promotion_of(tags: Mapping[str, str]) -> Promotion | None:
    if Tag.PROMOTION_DECISION not in tags:
        return None
    return Promotion(
        decision=tags[Tag.PROMOTION_DECISION],
        by=tags.get(Tag.PROMOTION_BY, "unknown"),
        reason=tags.get(Tag.PROMOTION_REASON, ""),
        at=tags.get(Tag.PROMOTION_AT, "unknown"),
        forced_by=tags.get(Tag.PROMOTION_FORCED_BY),
        previous=tags.get(Tag.PROMOTION_PREVIOUS),
    )


def iso(value: str | int | float | None) -> str:
    """A time as ISO 8601 UTC to the second, from epoch milliseconds or an ISO string."""
    if value is None or value == "":
        return "unknown"
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="seconds")
    try:
        return datetime.fromisoformat(value).astimezone(UTC).isoformat(timespec="seconds")
    except ValueError:
        return value


def plan_from_config(config: Mapping[str, Any], source: str) -> MonitoringPlan:
    """The monitoring plan from ``prefect.yaml``'s ``monitor`` and ``release`` deployments (defaults else)."""
    deployments = {d.get("name"): d for d in config.get("deployments", []) if isinstance(d, Mapping)}
    monitor = deployments.get("monitor", {})
    release = deployments.get("release", {})
    watch, ship = monitor.get("parameters", {}) or {}, release.get("parameters", {}) or {}
    schedules = [s.get("cron") for s in monitor.get("schedules", []) or [] if s.get("active", True)]
    return MonitoringPlan(
        source=source,
        drift=MonitorThresholds(**(watch.get("thresholds") or {})),
        live=LiveThresholds(**((ship.get("gate_config") or {}).get("live") or {})),
        monitor_schedule=", ".join(f"`{c}` UTC" for c in schedules if c) or "not scheduled",
        window_minutes=float(watch.get("window_minutes", 60)),
        retrain=bool(watch.get("retrain", False)),
        release_strategy=str(ship.get("strategy", "canary")),
        release_steps=tuple(float(s) for s in ship.get("steps", (5, 25, 50))),
        bake_s=float(ship.get("bake_s", 30)),
    )


def load_plan(path: Path = PREFECT_YAML) -> MonitoringPlan:
    if not path.exists():
        return MonitoringPlan(source="the defaults of MonitorThresholds and LiveThresholds")
    return plan_from_config(yaml.safe_load(path.read_text()) or {}, f"`{path.name}`")


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


def _runs(client: MlflowClient, experiment: str, where: str, limit: int = 200) -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(
        client.search_runs(
            [found.experiment_id], where, order_by=["attributes.start_time DESC"], max_results=limit
        )
    )


def _dataset_inputs(run: Run) -> tuple[DataInput, ...]:
    found = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        profile = item.dataset.profile or ""
        rows = re.search(r'"num_rows":\s*(\d+)', profile)
        found.append(
            DataInput(
                context,
                item.dataset.name,
                item.dataset.digest,
                item.dataset.source_type,
                int(rows.group(1)) if rows else None,
            )
        )
    return tuple(found)


def expectations_of(report: Mapping[str, Any]) -> tuple[Expectations, ...]:
    """The validation report's outcomes, counted by kind of expectation."""
    kinds: dict[str, list[Mapping[str, Any]]] = {}
    for outcome in report.get("outcomes", []):
        kinds.setdefault(str(outcome.get("expectation")), []).append(outcome)
    return tuple(
        Expectations(
            name,
            sum(bool(o.get("passed")) for o in found),
            len(found),
            tuple(
                f"{o.get('column') or '(table)'}: {o.get('observed')}" for o in found if not o.get("passed")
            ),
        )
        for name, found in sorted(kinds.items())
    )


def _validation_report(client: MlflowClient, run_id: str) -> tuple[Expectations, ...]:
    try:
        path = Path(client.download_artifacts(run_id, VALIDATION_ARTIFACT))
    except Exception:  # noqa: BLE001 - runs trained before the report was logged have none
        return ()
    return expectations_of(json.loads(path.read_text()))


def _deployment_events(client: MlflowClient, settings: Settings, version: str) -> list[Event]:
    experiment, model = f"{settings.experiment_name}-deployments", _quoted(settings.model_name)
    events = []
    for side in ("to_version", "from_version"):
        for run in _runs(client, experiment, f"tags.model = '{model}' and tags.{side} = '{version}'"):
            t = run.data.tags
            move = f"v{t.get('from_version')} -> v{t.get('to_version')}"
            kind = t.get("action", "deploy") if side == "to_version" else "champion moved away"
            summary = f"{t.get('action')} {move} by {t.get('triggered_by')}: {t.get('result')}"
            if t.get("failed_checks", "none") != "none":
                summary += f" (failed checks: {t['failed_checks']})"
            events.append(Event(iso(t.get("finished_at")), kind, summary, f"run {run.info.run_id}"))
    return events


def _release_events(client: MlflowClient, settings: Settings, version: str) -> list[Event]:
    where = f"tags.model = '{_quoted(settings.model_name)}' and tags.version = '{version}'"
    events = []
    for run in _runs(client, f"{settings.experiment_name}-releases", where):
        p, verdict = run.data.params, run.data.tags.get("verdict", "unknown")
        summary = (
            f"release ({p.get('strategy')}) against v{p.get('champion')}, {p.get('windows')} window(s): "
            f"{verdict}"
        )
        if verdict != "promoted":
            summary += f"; failed: {_verdict_text(client, run.info.run_id)}"
        events.append(Event(iso(run.info.start_time), "release", summary, f"run {run.info.run_id}"))
    return events


def _verdict_text(client: MlflowClient, run_id: str) -> str:
    try:
        return Path(client.download_artifacts(run_id, "verdict.txt")).read_text().strip().replace("\n", "; ")
    except Exception:  # noqa: BLE001 - the run's tags still tell the verdict
        return "(verdict.txt not readable)"


def _superseded_events(client: MlflowClient, model_name: str, version: str) -> list[Event]:
    """Promotions of other versions that replaced this one as champion."""
    events = []
    for other in client.search_model_versions(f"name = '{_quoted(model_name)}'"):
        tags = other.tags
        if str(other.version) != version and tags.get(Tag.PROMOTION_PREVIOUS) == version:
            summary = (
                f"champion moved to v{other.version}: {tags.get(Tag.PROMOTION_DECISION)} by "
                f"{tags.get(Tag.PROMOTION_BY)} ({tags.get(Tag.PROMOTION_REASON)})"
            )
            events.append(Event(iso(tags.get(Tag.PROMOTION_AT)), "superseded", summary, f"v{other.version}"))
    return events


def _monitor_runs(client: MlflowClient, settings: Settings, version: str) -> tuple[Event, ...]:
    where = f"tags.model = '{_quoted(settings.model_name)}' and tags.version = '{version}'"
    runs = _runs(client, f"{settings.experiment_name}-monitoring", where, MONITOR_RUNS_SHOWN)
    return tuple(
        Event(
            iso(r.info.start_time),
            "monitor",
            f"{r.data.tags.get('verdict')}: {r.data.tags.get('breaches', 'none')}",
            f"run {r.info.run_id}",
        )
        for r in runs
    )


def _own_events(registered_at: str, run_id: str, tags: Mapping[str, str]) -> list[Event]:
    """What the version's own tags date: its registration and its last promotion decision."""
    events = [
        Event(
            registered_at,
            "registered",
            f"from training run {run_id}, gate verdict {tags.get(Tag.GATE_VERDICT, 'none')} against "
            f"champion {tags.get(Tag.GATE_CHAMPION, 'unknown')}",
            f"flow run {tags.get(Tag.FLOW_RUN, 'unknown')}",
        )
    ]
    promotion = promotion_of(tags)
    if promotion is not None:
        forced = f", forced by {promotion.forced_by}" if promotion.forced_by else ""
        previous = f"; champion was {promotion.previous}" if promotion.previous else ""
        events.append(
            Event(
                iso(promotion.at),
                "promotion",
                f"{promotion.decision} by {promotion.by}: {promotion.reason}{forced}{previous}",
                "version tags promotion.*",
            )
        )
    return events


def _lookup(name: str | None, table: Mapping[str, Any]) -> Any:
    return table.get(name) if name else None


def collect(
    client: MlflowClient,
    settings: Settings,
    version: str,
    event: str,
    plan: MonitoringPlan | None = None,
) -> VersionFacts:
    """Every fact the document states, read from the registry and the runs about the version."""
    found = client.get_model_version(settings.model_name, version)
    model = client.get_registered_model(settings.model_name)
    run = client.get_run(str(found.run_id))
    tags = dict(found.tags)
    registered_at = iso(found.creation_timestamp)
    history = [
        *_own_events(registered_at, str(found.run_id), tags),
        *_deployment_events(client, settings, version),
        *_release_events(client, settings, version),
        *_superseded_events(client, settings.model_name, version),
    ]
    metrics = run.data.metrics
    return VersionFacts(
        model_name=settings.model_name,
        version=version,
        run_id=str(found.run_id),
        experiment_id=str(run.info.experiment_id),
        registered_at=registered_at,
        aliases=tuple(sorted(found.aliases)),
        live_history=tuple(v for v in model.tags.get(HISTORY_TAG, "").split(",") if v),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        event=event,
        tags=tags,
        params=dict(run.data.params),
        metrics={k.removeprefix("holdout_"): v for k, v in metrics.items() if k.startswith("holdout_")},
        spec=_lookup(run.data.params.get("dataset"), datasets.SPECS),
        recipe=_lookup(tags.get(Tag.RECIPE), RECIPES),
        inputs=_dataset_inputs(run),
        expectations=_validation_report(client, str(found.run_id)),
        checks=gate_checks(tags),
        promotion=promotion_of(tags),
        history=tuple(sorted(history, key=lambda e: e.at)),
        monitor_runs=_monitor_runs(client, settings, version),
        plan=plan or load_plan(),
    )


# --- the document ----------------------------------------------------------------------------------


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def _header(f: VersionFacts) -> list[str]:
    return [
        f"# Technical documentation: {f.model_name} v{f.version}",
        "",
        "The version's model card in the form of the EU AI Act's Annex IV technical documentation, generated "
        f"{f.generated_at} after {f.event}, from the MLflow registry alone (the version's tags, its training "
        "run, and the release, deployment and monitoring runs about it); regenerated at every promotion, "
        "release and rollback of the version.",
        "",
        f"- status: aliases {', '.join(f.aliases) or 'none'}; gate {f.gate_verdict}; deployment "
        f"{f.tag(Tag.DEPLOYMENT_STATUS, 'never deployed')}; last release "
        f"{f.tag(Tag.RELEASE_VERDICT, 'none')}",
    ]


def _purpose(f: VersionFacts) -> list[str]:
    lines = ["## 1. Intended purpose"]
    spec = f.spec
    if spec is None:
        return [
            *lines,
            f"Dataset `{f.params.get('dataset', 'unknown')}` is not a specification of this code.",
        ]
    output = "a label and its class probabilities" if spec.task == "classification" else "a numeric value"
    return [
        *lines,
        f"{spec.description} Task: {spec.task}, predicting `{spec.target}` ({output}) from "
        f"{len(spec.features)} named features: {', '.join(spec.feature_names)}.",
        "",
        "Intended for rows of the same schema and population as its training data "
        f"(`{f.tag(Tag.DATA_SOURCE)}`), one request or one batch at a time, served as ONNX through "
        "onnxruntime, every answer naming the "
        "model, version and run. Not validated for inputs outside the ranges seen in training, for other "
        "populations or periods, nor for decisions without a person able to review them.",
    ]


def _suite(spec: DatasetSpec) -> str:
    extra = "allowed" if spec.allow_extra_columns else "refused"
    return (
        f"columns: the {len(spec.features)} features and `{spec.target}` (extra columns {extra}); at least "
        f"{spec.min_rows} rows; at most {spec.max_duplicate_share:.0%} duplicated rows; per feature no "
        "nulls, numeric types and ranges, known categories; the target not null"
        + (f" and in {list(spec.target_values)}" if spec.target_values else "")
        + "; no feature alone predicting the target with a score >= "
        + f"{spec.max_single_feature_score} (leakage)"
    )


def _data(f: VersionFacts) -> list[str]:
    rows = [
        (i.context, i.name, f"`{i.digest}`", i.source_type, "" if i.rows is None else str(i.rows))
        for i in f.inputs
    ]
    return [
        "## 2. Data and its validation",
        f"- source: `{f.tag(Tag.DATA_SOURCE)}`",
        f"- digest: `{f.tag(Tag.DATA_DIGEST)}` ({f.tag(Tag.DATA_ROWS)} rows)",
        f"- split: {f.params.get('train_rows', '?')} training rows, {f.params.get('holdout_rows', '?')} "
        "held-out rows (deterministic, seed 0; stratified by class for a classification)",
        f"- validation (Great Expectations): {f.tag(Tag.DATA_VALIDATION)}; a failure stops the pipeline "
        "before training, so a registered version's data passed",
        f"- suite: {_suite(f.spec)}" if f.spec else "- suite: not known for this dataset",
        "",
        *_expectations(f),
        "Datasets logged with the training run (MLflow dataset tracking):",
        "",
        *_table(("context", "name", "digest", "source type", "rows"), rows),
    ]


def _expectations(f: VersionFacts) -> list[str]:
    if not f.expectations:
        return [
            "The run holds no validation report (`validation/report.json`): the summary above is all.",
            "",
        ]
    rows = [(e.expectation, f"{e.passed}/{e.total}", "; ".join(e.failed) or "none") for e in f.expectations]
    return [
        f"Great Expectations report of the run (`{VALIDATION_ARTIFACT}`), by expectation:",
        "",
        *_table(("expectation", "passed", "failures"), rows),
        "",
    ]


def _design(f: VersionFacts) -> list[str]:
    recipe = f.recipe
    params = sorted((k.removeprefix("model."), v) for k, v in f.params.items() if k.startswith("model."))
    preprocessing = (
        "numeric features standardised, categories one-hot encoded"
        if recipe is None or recipe.scale_numeric
        else "numeric features as they are (tree splits), categories one-hot encoded"
    )
    described = f": {recipe.description}" if recipe else ""
    return [
        "## 3. Design choices",
        f"- recipe: `{f.tag(Tag.RECIPE)}`{described} (fixed by its name in `models/recipes.py`: the same "
        "recipe on the same data is the same training, `train.key`)",
        f"- estimator: `{f.params.get('estimator', 'unknown')}` in a scikit-learn Pipeline; {preprocessing}",
        f"- served as ONNX: `{f.tag(Tag.ONNX_URI)}`, parity {f.tag(Tag.ONNX_PARITY)} (max difference "
        f"{f.tag(Tag.ONNX_PARITY_MAX_DIFF)} on every held-out row)",
        "",
        "Hyperparameters:",
        "",
        *_table(("parameter", "value"), [(k, f"`{v}`") for k, v in params]),
    ]


def _metrics(f: VersionFacts) -> list[str]:
    from models.metrics import HIGHER_IS_BETTER

    rows = [
        (name, f"{value:.4f}", "higher" if name in HIGHER_IS_BETTER else "lower")
        for name, value in sorted(f.metrics.items())
    ]
    task = f.spec.task if f.spec else "unknown"
    specific = (
        "accuracy and F1 (macro) depend on the classes' balance in the held-out rows; roc_auc is computed "
        "for two classes only; log_loss judges the probabilities"
        if task == "classification"
        else "rmse and mae are in the target's unit; r2 is relative to the held-out rows' variance"
    )
    return [
        "## 4. Metrics and their limits",
        f"Held-out rows ({f.params.get('holdout_rows', '?')}), scored once by the training run:",
        "",
        *_table(("metric", "held-out", "better"), rows),
        "",
        "What they do not cover:",
        "- data from another source, population or period: the held-out rows come from the same source as "
        "the training rows, so they estimate performance on data like it only;",
        "- subgroups: no metric per group of people or feature range (fairness), no calibration analysis, no "
        "robustness test against adversarial or out-of-range inputs;",
        f"- {specific};",
        "- live quality: known only where ground-truth labels reach the monitor (section 8); latency here "
        "is onnxruntime's for one row on one thread, served latency is checked at each deploy and by the "
        "monitor.",
    ]


def _gate(f: VersionFacts) -> list[str]:
    rows = [(c.name, c.value, c.threshold, c.verdict) for c in f.checks]
    return [
        f"## 5. Gate: {f.gate_verdict}",
        f"Compared against champion: {f.tag(Tag.GATE_CHAMPION, 'unknown')} (scored on this version's "
        f"held-out rows in its run). Reasons: {f.tag(Tag.GATE_REASONS, 'none')}.",
        "",
        *(_table(("check", "value", "threshold", "verdict"), rows) if rows else ["No gate checks recorded."]),
    ]


def _mode(p: Promotion) -> str:
    if p.by == "pipeline (auto)":
        return "automatic: promotion mode `auto` moved champion when the gate passed; no person approved it"
    if p.by == "timeout":
        return "no reviewer answered within the approval timeout, which declines"
    if p.reason.startswith("release ("):
        return f"by a person, {p.by}, through a gradual release judged on live traffic"
    return f"by a person, {p.by}: the approval form of a reviewed run or the `promote` deployment"


def _oversight(f: VersionFacts) -> list[str]:
    lines = ["## 6. Human oversight: approval and promotion"]
    p = f.promotion
    if p is None:
        lines.append("- decision: none (not offered for promotion)")
        if f.gate_verdict != "passed":
            lines.append(
                "- the gate rejected it: only a person forcing it (`promotion.forced_by`) can promote it"
            )
    else:
        lines += [
            f"- decision: {p.decision} by {p.by}: {p.reason}",
            f"- how: {_mode(p)}",
            f"- when: {iso(p.at)}",
            f"- forced: yes, by {p.forced_by} (the version had not passed the gate)"
            if p.forced_by
            else "- forced: no",
            f"- replaced champion: {'none' if p.previous in (None, 'none') else 'v' + str(p.previous)}",
        ]
    people = [e for e in f.history if e.kind in ("rollback", "champion moved away")]
    lines += [f"- {e.at}: {e.summary}" for e in people]
    lines += [
        "",
        "A person decides through the Prefect UI: the approval form of `training-pipeline-reviewed` "
        "(approve, reviewer, reason), the `promote` deployment (refuses a version that failed the gate "
        "unless forced), "
        "`release` and `rollback`; each decision is recorded on the version with its author and reason.",
    ]
    return lines


def _history(f: VersionFacts) -> list[str]:
    live = ", ".join(f"**v{v}**" if v == f.version else f"v{v}" for v in f.live_history) or "none"
    rows = [(e.at, e.kind, e.summary, e.record) for e in f.history]
    return [
        "## 7. Releases, rollbacks and champion moves",
        f"- last release: {f.tag(Tag.RELEASE_VERDICT, 'none')}; failed checks: "
        f"{f.tag(Tag.RELEASE_FAILED, 'none')}; run {f.tag(Tag.RELEASE_RUN, 'none')}",
        f"- deployment: {f.tag(Tag.DEPLOYMENT_STATUS, 'never deployed')}"
        + (f" ({f.tags[Tag.DEPLOYMENT_REASON]})" if Tag.DEPLOYMENT_REASON in f.tags else ""),
        f"- versions proven live, oldest first: {live}",
        "",
        *_table(("when (UTC)", "event", "what", "record"), rows),
    ]


def _thresholds(values: MonitorThresholds | LiveThresholds) -> list[str]:
    rows = [
        (name, f"`{getattr(values, name)}`", info.description or "")
        for name, info in type(values).model_fields.items()
    ]
    return _table(("threshold", "value", "meaning"), rows)


def _monitoring(f: VersionFacts) -> list[str]:
    plan = f.plan
    steps = ", ".join(f"{s:g}%" for s in plan.release_steps)
    runs = [(e.at, e.summary, e.record) for e in f.monitor_runs]
    return [
        "## 8. Post-market monitoring plan",
        f"Thresholds as deployed in {plan.source}.",
        "",
        f"- monitor: {plan.monitor_schedule}, over the last {plan.window_minutes:g} minutes of the inference "
        "log: per-feature drift (PSI with a KS or chi-square test), prediction drift, error rate, latency "
        "and, with labels, live metrics against the gate's; a breach emits `mlops.monitor.breach`"
        + (" and starts a retraining run" if plan.retrain else ""),
        f"- releases: `{plan.release_strategy}` at {steps}, {plan.bake_s:g} s per window, each judged "
        "against the champion on live traffic; a failed window sets the version's share to 0 at once",
        f"- last monitor result: {f.tag(Tag.MONITOR_LAST, 'not monitored yet')}",
        "",
        "Monitor (drift and live quality):",
        "",
        *_thresholds(plan.drift),
        "",
        "Release windows (`GateConfig.live`):",
        "",
        *_thresholds(plan.live),
        *(
            ["", "Latest monitor runs:", "", *_table(("when (UTC)", "verdict", "record"), runs)]
            if runs
            else []
        ),
    ]


def _lineage(f: VersionFacts) -> list[str]:
    return [
        "## 9. Lineage",
        f"- MLflow run: `{f.run_id}` (experiment {f.experiment_id})",
        f"- git commit: `{f.tag(Tag.GIT_COMMIT)}`",
        f"- registered model: `{f.model_name}` version {f.version}, registered {f.registered_at} by flow run "
        f"`{f.tag(Tag.FLOW_RUN, 'unknown')}`",
        f"- training key: `{f.tag(Tag.TRAINING_KEY)}`; golden rows: `{f.tag(Tag.GOLDEN_URI)}`",
        f"- this document: `{f.card_uri}`, earlier ones under `{ARCHIVE_FOLDER}/` in the same run",
    ]


SECTIONS = (_header, _purpose, _data, _design, _metrics, _gate, _oversight, _history, _monitoring, _lineage)


def render(facts: VersionFacts) -> str:
    """The Markdown document: every section, from the facts alone."""
    return "\n\n".join("\n".join(section(facts)) for section in SECTIONS) + "\n"


def card_link(facts: VersionFacts) -> str:
    """The document's page in the MLflow UI (relative: the UI's own address comes first)."""
    return f"#/experiments/{facts.experiment_id}/runs/{facts.run_id}/artifacts/{MODEL_CARD_ARTIFACT}"


def description(facts: VersionFacts) -> str:
    """The short summary the registry UI shows on the version's page."""
    p = facts.promotion
    decision = (
        "not offered for promotion"
        if p is None
        else f"{p.decision} by {p.by} at {iso(p.at)}: {p.reason}"
        + (f" (forced by {p.forced_by})" if p.forced_by else "")
    )
    metrics = " · ".join(f"{k} {v:.4f}" for k, v in sorted(facts.metrics.items()))
    return "\n\n".join(
        [
            f"**Gate: {facts.gate_verdict}** · **Promotion: {decision}**",
            f"Aliases: {', '.join(facts.aliases) or 'none'} · release: "
            f"{facts.tag(Tag.RELEASE_VERDICT, 'none')} · deployment: "
            f"{facts.tag(Tag.DEPLOYMENT_STATUS, 'never deployed')}",
            f"Held-out: {metrics or 'none'}",
            f"Gate checks: {sum(c.verdict == 'pass' for c in facts.checks)}/{len(facts.checks)} passed; "
            f"failed: {facts.tag(Tag.GATE_REASONS, 'none')}",
            f"Technical documentation (Annex IV): [{MODEL_CARD_ARTIFACT}]({card_link(facts)}) "
            f"(`{facts.card_uri}`), generated {facts.generated_at} after {facts.event}.",
        ]
    )


# --- publishing ------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "update"


def publish(client: MlflowClient, facts: VersionFacts, text: str) -> str:
    """Log the document to the version's run, point the version's tag at it, set its description."""
    stamp = facts.generated_at.replace(":", "").replace("+0000", "Z")
    client.log_text(facts.run_id, text, MODEL_CARD_ARTIFACT)
    client.log_text(facts.run_id, text, f"{ARCHIVE_FOLDER}/{stamp}-{_slug(facts.event)}.md")
    client.set_model_version_tag(facts.model_name, facts.version, Tag.MODEL_CARD, facts.card_uri)
    client.update_model_version(facts.model_name, facts.version, description=description(facts))
    return facts.card_uri


@dataclass(frozen=True)
class Published:
    uri: str
    text: str
    facts: VersionFacts


def regenerate(client: MlflowClient, settings: Settings, version: str, event: str) -> Published:
    """Collect, render and publish the document of ``version``; ``event``: what it follows."""
    facts = collect(client, settings, version, event)
    text = render(facts)
    return Published(publish(client, facts, text), text, facts)


def _warn(message: str, *args: object) -> None:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        get_run_logger().warning(message, *args)
    except MissingContextError:
        log.warning(message, *args)


def refresh(client: MlflowClient, settings: Settings, *versions: str | None, event: str) -> None:
    """Regenerate the documents of ``versions`` after ``event``; a failure is a warning, never raised."""
    for version in dict.fromkeys(v for v in versions if v):
        try:
            regenerate(client, settings, version, event)
        except Exception as exc:  # noqa: BLE001 - the release or rollback it follows stands either way
            _warn(
                "stage=card version=%s not regenerated after %s: %s: %s",
                version,
                event,
                type(exc).__name__,
                exc,
            )
