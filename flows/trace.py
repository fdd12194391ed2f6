"""From one answer back to everything behind it: ``mlops trace <request-id>`` and the ``trace`` deployment.

One report from the inference-log record (live or compacted segments; a batch id finds its batch record)
to the model version and its training run, the data (source and digests, see "Digests" below), the data
validation with every expectation, each gate check, the promotion decision, the release and deployment
records that put the version in front of the request, the monitoring windows that covered it, and the
feedback label if one came. A request id not in the log is said to be past retention when retention has
deleted segments, else unknown.

Digests: there is one function, ``models.datasets.digest`` (SHA-256 of the column names and pandas'
row hashes, first 16 hex digits). ``data.digest`` on the version and the training run is the digest of the
whole validated table; the run's two MLflow dataset inputs (``training`` and ``holdout``) carry the digest
of their split of it, and are named ``<dataset>-<data.digest>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.inference_records import all_segments, segment_lines
from models.log_audit import retention_horizon
from models.registry import VALIDATION_ARTIFACT, Tag
from models.settings import Settings


def find(directory: Path, request_id: str) -> list[dict[str, Any]]:
    """Every record of a log folder with this request id (an answer, its shadow's copy, a batch record,
    feedback labels), oldest first; a byte search before any JSON is parsed."""
    needle = orjson.dumps(request_id)
    found = []
    for segment in all_segments(directory):
        for line in segment_lines(segment):
            if needle in line and line.endswith(b"\n"):
                record = orjson.loads(line)
                if record.get("request_id") == request_id:
                    found.append({**record, "segment": segment.name})
    return found


def _time(ts: float | None) -> str:
    return "?" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _ms(value: Any) -> float | None:
    return None if value in (None, "") else float(value) / 1000


@dataclass
class Trace:
    request_id: str
    found: bool
    note: str = ""
    answer: dict[str, Any] = field(default_factory=dict)
    shadow: list[dict[str, Any]] = field(default_factory=list)
    version: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    promotion: dict[str, str] = field(default_factory=dict)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    monitoring: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, default=str)


def not_found(request_id: str, log_dir: Path, retention_days: float) -> Trace:
    horizon = retention_horizon(log_dir)
    if horizon is None:
        note = f"no record of request {request_id!r} in {log_dir}: it was not answered here"
    else:
        note = (f"no record of request {request_id!r}: retention ({retention_days:g} days) deleted the log's "
                f"records up to {_time(horizon)}; an older request is past retention")  # fmt: skip
    return Trace(request_id, False, note)


def _runs(client: MlflowClient, experiment: str, query: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(client.search_runs([found.experiment_id], query, order_by=["attributes.start_time ASC"]))


def _gate(tags: Mapping[str, str]) -> dict[str, Any]:
    prefix = Tag.gate_check("")
    return {
        "verdict": tags.get(Tag.GATE_VERDICT),
        "reasons": tags.get(Tag.GATE_REASONS),
        "compared_with": tags.get(Tag.GATE_CHAMPION),
        "checks": {k.removeprefix(prefix): v for k, v in sorted(tags.items()) if k.startswith(prefix)},
    }


def _validation(client: MlflowClient, run_id: str, summary: str | None) -> dict[str, Any]:
    try:
        path = client.download_artifacts(run_id, VALIDATION_ARTIFACT)
    except (MlflowException, OSError):
        return {"summary": summary, "expectations": "not recorded with the run (trained before it was)"}
    report: dict[str, Any] = json.loads(Path(path).read_text())
    return {"summary": summary, **report}


def collect(settings: Settings, request_id: str, client: MlflowClient) -> Trace:
    records = find(settings.inference_log_dir, request_id)
    if not records:
        return not_found(request_id, settings.inference_log_dir, settings.log_retention_days)
    answered = [r for r in records if r.get("role") != "shadow"]
    answer = (answered or records)[0]
    trace = Trace(request_id, True, answer=answer, shadow=[r for r in records if r.get("role") == "shadow"])
    model, version, ts = answer["model"], str(answer["version"]), float(answer["ts"])
    try:
        mv = client.get_model_version(model, version)
    except MlflowException as exc:
        trace.note = f"v{version} of {model} is not in the registry: {exc.message}"
        return trace
    tags = dict(mv.tags)
    trace.version = {"model": model, "version": version, "aliases": list(mv.aliases), "status": mv.status,
                     "description": mv.description, "created": _time(_ms(mv.creation_timestamp)),
                     "model_card": tags.get(Tag.MODEL_CARD), "onnx": tags.get(Tag.ONNX_URI),
                     "onnx_parity": tags.get(Tag.ONNX_PARITY), "release": tags.get(Tag.RELEASE_VERDICT),
                     "deployment_status": tags.get(Tag.DEPLOYMENT_STATUS)}  # fmt: skip
    run = client.get_run(str(mv.run_id))
    experiment = client.get_experiment(run.info.experiment_id).name
    trace.run = {"run_id": run.info.run_id, "experiment": experiment, "recipe": tags.get(Tag.RECIPE),
                 "git_commit": tags.get(Tag.GIT_COMMIT), "flow_run": tags.get(Tag.FLOW_RUN),
                 "metrics": {k: v for k, v in sorted(run.data.metrics.items()) if k.startswith("holdout_")},
                 "started": _time(_ms(run.info.start_time))}  # fmt: skip
    trace.data = {"source": tags.get(Tag.DATA_SOURCE), "digest": tags.get(Tag.DATA_DIGEST),
                  "rows": tags.get(Tag.DATA_ROWS),
                  "splits": {next((t.value for t in i.tags if t.key == "mlflow.data.context"), "?"):
                             {"name": i.dataset.name, "digest": i.dataset.digest}
                             for i in (run.inputs.dataset_inputs if run.inputs else [])}}  # fmt: skip
    trace.validation = _validation(client, run.info.run_id, tags.get(Tag.DATA_VALIDATION))
    trace.gate = _gate(tags)
    trace.promotion = {k.removeprefix("promotion."): v for k, v in sorted(tags.items())
                       if k.startswith("promotion.")}  # fmt: skip
    trace.deployments = _deployments(client, experiment, model, version, ts)
    trace.releases = _releases(client, experiment, model, version, ts)
    trace.monitoring = _monitoring(client, experiment, model, version, ts)
    trace.feedback = [{k: r.get(k) for k in ("row", "label", "time", "feedback_id")}
                      for r in find(settings.feedback_log_dir, request_id)]  # fmt: skip
    return trace


def _deployments(
    client: MlflowClient, experiment: str, model: str, version: str, ts: float
) -> list[dict[str, Any]]:
    """The deployments of this version; the one in front of the request is the last that passed before it."""
    runs = _runs(
        client, f"{experiment}-deployments", f"tags.model = '{model}' and tags.to_version = '{version}'"
    )
    out = []
    for run in runs:
        tags = run.data.tags
        out.append({"run_id": run.info.run_id, "action": tags.get("action"), "by": tags.get("triggered_by"),
                    "finished_at": tags.get("finished_at"), "result": tags.get("result"),
                    "summary": tags.get("summary"),
                    "before_request": (_ms(run.info.end_time) or 0) <= ts})  # fmt: skip
    serving = [d for d in out if d["before_request"] and d["result"] == "passed"]
    if serving:
        serving[-1]["served_this_request"] = True
    return out


def _releases(
    client: MlflowClient, experiment: str, model: str, version: str, ts: float
) -> list[dict[str, Any]]:
    out = []
    for run in _runs(
        client, f"{experiment}-releases", f"tags.model = '{model}' and tags.version = '{version}'"
    ):
        began, ended = _ms(run.info.start_time) or 0, _ms(run.info.end_time) or float("inf")
        out.append({"run_id": run.info.run_id, "strategy": run.data.params.get("strategy"),
                    "verdict": run.data.tags.get("verdict"), "started": _time(began),
                    "during_this_request": began <= ts <= ended})  # fmt: skip
    return out


def _monitoring(
    client: MlflowClient, experiment: str, model: str, version: str, ts: float
) -> list[dict[str, Any]]:
    out = []
    for run in _runs(
        client, f"{experiment}-monitoring", f"tags.model = '{model}' and tags.version = '{version}'"
    ):
        tags = run.data.tags
        since, until = float(tags.get("window.since", "nan")), float(tags.get("window.until", "nan"))
        if since <= ts < until:
            out.append({"run_id": run.info.run_id, "window": f"{_time(since)} .. {_time(until)}",
                        "verdict": tags.get("verdict"), "breaches": tags.get("breaches")})  # fmt: skip
    return out


def lines(trace: Trace) -> Iterator[str]:
    """The report for a terminal."""
    if not trace.found:
        yield trace.note
        return
    a = trace.answer
    yield f"request {trace.request_id}"
    yield (
        f"  answered  {a.get('time')} by {a['model']} v{a['version']} (run {a.get('run_id')}) "
        f"on {a.get('route')}"
        + (f", as the {a['role']}" if a.get("role") else "")
        + (", a deploy check's probe" if a.get("probe") else "")
    )
    if "error" in a:
        yield f"  refused   {a.get('status')}: {a['error']}"
    elif a.get("route") == "batch":
        yield f"  batch     {a.get('rows')} rows: {a.get('scored')} scored, {a.get('quarantined')} set aside"
        yield f"  files     {json.dumps(a.get('files'))[:400]}; MLflow run {a.get('batch_run')}"
    else:
        yield f"  inputs    {json.dumps(a.get('inputs'))[:300]}"
        yield f"  outputs   {json.dumps(a.get('outputs'))[:300]}"
        yield f"  model time {a.get('latency_ms')} ms, {a.get('rows')} row(s); log segment {a['segment']}"
    for s in trace.shadow:
        yield f"  shadow    v{s['version']} also ran it: {json.dumps(s.get('outputs'))[:200]}"
    if trace.note:
        yield f"  note      {trace.note}"
        return
    v, r, d = trace.version, trace.run, trace.data
    yield f"version   {v['model']} v{v['version']}, aliases now {v['aliases'] or 'none'}"
    yield f"  created   {v['created']}; release {v['release'] or 'none'}; deployment {v['deployment_status']}"
    yield f"  card      {v['model_card']}   onnx {v['onnx']} (parity {v['onnx_parity']})"
    yield f"run       {r['run_id']} in {r['experiment']}: {r['recipe']}, git {r['git_commit']}"
    yield f"  flow run  {r['flow_run']} (Prefect), started {r['started']}"
    yield "  metrics   " + ", ".join(
        f"{k.removeprefix('holdout_')} {val:.4f}" for k, val in r["metrics"].items()
    )
    yield f"data      {d['source']}, {d['rows']} rows, digest {d['digest']} (of the whole validated table)"
    for context, split in d["splits"].items():
        yield f"  {context:<9} split digest {split['digest']} ({split['name']})"
    val = trace.validation
    yield f"validation {val.get('summary')}"
    outcomes = val.get("outcomes")
    if isinstance(outcomes, list):
        failed = [o for o in outcomes if not o["passed"]]
        kinds = sorted({o["expectation"] for o in outcomes})
        yield f"  {len(outcomes)} expectations ({', '.join(kinds)}); failed: {len(failed)}"
        for o in failed:
            yield f"  FAILED    {o['expectation']} {o['column'] or ''}: {o['observed']}"
    g = trace.gate
    yield f"gate      {g['verdict']} (against {g['compared_with']}): {g['reasons']}"
    for name, value in g["checks"].items():
        yield f"  {name:<24} {value}"
    p = trace.promotion
    yield (f"promotion {p.get('decision', 'none')} by {p.get('by', '?')} at {p.get('at', '?')}: "
           f"{p.get('reason', '')}" + (f"; FORCED by {p['forced_by']}" if "forced_by" in p else "")
           + f"; replaced {p.get('previous', '?')}")  # fmt: skip
    for dep in trace.deployments:
        mark = "  <- in front of this request" if dep.get("served_this_request") else ""
        yield f"deploy    {dep['finished_at']} {dep['summary']} (run {dep['run_id']}){mark}"
    for rel in trace.releases:
        mark = "  <- during this request" if rel["during_this_request"] else ""
        yield f"release   {rel['started']} {rel['strategy']}: {rel['verdict']} (run {rel['run_id']}){mark}"
    if not trace.releases:
        yield "release   none (promoted directly)"
    for mon in trace.monitoring:
        yield f"monitor   {mon['window']}: {mon['verdict']} ({mon['breaches']}) run {mon['run_id']}"
    if not trace.monitoring:
        yield "monitor   no monitoring window covered it yet"
    for fb in trace.feedback:
        yield f"feedback  row {fb['row']}: label {fb['label']!r} at {fb['time']} (call {fb['feedback_id']})"
    if not trace.feedback:
        yield "feedback  no label yet"
