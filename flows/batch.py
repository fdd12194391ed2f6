"""The batch-score flow: the served ONNX artifact over whole datasets, one Dask task per input file.

Resolve the version (alias or number) and check the batch path on its golden rows; list the inputs and
refuse any whose schema fails the training data's suite, with a report, before anything is scored; score
every file on Dask (a local cluster, or the scheduler ``MLOPS_DASK_ADDRESS`` names), retried on a lost
worker without duplicate output; judge the batch's skew against the training profile; record an MLflow
run in ``<experiment>-batch`` and a Prefect artifact. The scoring itself is ``models/batch.py``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import fsspec
import mlflow.artifacts
import pandas as pd
import prefect.runtime.flow_run
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.states import Failed

from flows import monitor, validate
from flows.batch_worker import score_files
from flows.gateway import Registry, gateway
from flows.runs import artifact_key, log_stage
from models import batch, datasets, inference_records
from models.profile import LiveProfile
from models.registry import CHAMPION, Tag
from models.scoring import OnnxModel
from models.settings import Settings, redact

SkewAction = Literal["warn", "fail"]
SCHEMA_SAMPLE_ROWS = 1000
GOLDEN_TOLERANCE = 1e-6  # what the service's own self-test allows


class BatchRefusedError(RuntimeError):
    """Nothing was scored: the model cannot be used as served, or an input's schema is wrong."""


@dataclass(frozen=True)
class BatchModel:
    """A registered version as the batch needs it: the exact ONNX bytes the service serves, and its data."""

    name: str
    version: str
    run_id: str
    onnx: bytes
    dataset: str
    profile: dict[str, Any]
    golden: dict[str, Any]


def load_version(registry: Registry, version: str) -> BatchModel:
    uri = registry.tags(version).get(Tag.ONNX_URI)
    if not uri:
        raise BatchRefusedError(f"{registry.model_name} v{version} has no ONNX model ({Tag.ONNX_URI})")
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    onnx_file = next(iter(sorted(folder.rglob("*.onnx"))), None)
    if onnx_file is None:
        raise BatchRefusedError(f"{uri} (v{version}) holds no .onnx file")
    profile = registry.profile(version)
    return BatchModel(
        name=registry.model_name,
        version=version,
        run_id=str(registry.version(version).run_id),
        onnx=onnx_file.read_bytes(),
        dataset=str(profile["dataset"]),
        profile=profile,
        golden=registry.golden(version),
    )


@task(cache_policy=NONE)
def resolve_model(settings: Settings, alias: str, version: str | None) -> BatchModel:
    registry = gateway(settings)
    chosen = version or registry.alias(alias)
    if chosen is None:
        raise BatchRefusedError(f"{settings.model_name} has no {alias!r} alias: nothing to score with")
    model = load_version(registry, chosen)
    spec = datasets.get_spec(model.dataset)
    mismatches = batch.golden_mismatches(
        OnnxModel.load(model.onnx, arena=False), spec, model.golden, GOLDEN_TOLERANCE
    )
    if mismatches:
        raise BatchRefusedError(
            f"v{chosen} scored in batch does not answer as served: {'; '.join(mismatches)}"
        )
    log_stage("batch", "model=%s version=%s run=%s golden=identical", model.name, chosen, model.run_id)
    return model


@task(cache_policy=NONE)
def check_schema(url: str, dataset: str) -> validate.ValidationReport:
    spec = datasets.get_spec(dataset)
    try:
        sample = batch.read_head(url, SCHEMA_SAMPLE_ROWS).to_pandas()
    except (ValueError, OSError) as exc:
        return validate.unreadable_report(spec, f"{url}: {type(exc).__name__}: {str(exc)[:200]}")
    return validate.validate_batch_sample(sample, spec, url)


def finished_outputs(output: str, names: Iterable[str], since: float) -> int:
    """How many of a batch's output files were put in place since ``since`` (each appears when complete)."""
    fs, root = fsspec.core.url_to_fs(output)

    def fresh(path: str) -> bool:
        try:
            return bool(fs.modified(path).timestamp() >= since)
        except (FileNotFoundError, NotImplementedError):
            return False

    return sum(fresh(posixpath.join(root, name)) for name in names)


def skew(
    model: BatchModel, results: list[batch.FileResult], thresholds: monitor.MonitorThresholds
) -> dict[str, Any]:
    """The batch's drift against the training profile, judged with the monitor's thresholds."""
    live = LiveProfile(model.profile)
    samples = [r.sample.to_pandas() for r in results if r.sample.num_rows]
    sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    if len(sample):
        live.add_columns(
            {name: sample[name].tolist() for name in live.features}, sample["prediction"].tolist()
        )
    parts = {
        "rows": len(sample),
        "features": live.feature_drift(),
        "prediction": live.prediction_drift(),
        "error_rate": 0.0,
        "latency_p99_ms": None,
        "live_metrics": {},
    }
    return {**parts, "breaches": monitor.judge(parts, thresholds)}


def scoring_span(results: list[batch.FileResult]) -> float:
    """From the first file's start to the last one's end, over every worker: what scoring itself took."""
    return max(r.finished_at for r in results) - min(r.started_at for r in results) if results else 0.0


def summary_markdown(
    model: BatchModel, source: str, output: str, results: list[batch.FileResult], drift: dict[str, Any]
) -> str:
    rows = sum(r.rows for r in results)
    quarantined = sum(r.quarantined for r in results)
    lines = [
        f"# Batch scoring: {model.name} v{model.version}",
        "",
        f"{source} -> {output}: {rows} rows, {rows - quarantined} scored, {quarantined} quarantined.",
        f"Skew against the training profile ({drift['rows']} sampled rows): "
        + ("; ".join(drift["breaches"]) or "no breach"),
        "",
        "| input | rows | scored | quarantined | s | output |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r.input_file} | {r.rows} | {r.scored} | {r.quarantined} | {r.seconds:.1f} "
            f"| {r.output_file} |"
            for r in results
        ),
        "",
        "| feature | PSI | test | p |",
        "|---|---|---|---|",
        *(
            f"| {d.name} | {d.psi:.3f} | {d.test} | {d.p_value:.2g} |"
            for d in [*drift["features"], drift["prediction"]]
        ),
    ]
    return "\n".join(lines)


def batch_log_record(
    model: BatchModel, batch_id: str, run_id: str, results: list[batch.FileResult]
) -> dict[str, Any]:
    """The batch's line in the inference log: from any output row's ``batch_id`` to what produced it."""
    now = time.time()
    return {
        "request_id": batch_id,
        "ts": now,
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "model": model.name,
        "version": model.version,
        "run_id": model.run_id,
        "rows": sum(r.rows for r in results),
        "scored": sum(r.scored for r in results),
        "quarantined": sum(r.quarantined for r in results),
        "files": [
            {
                "input": r.input_file,
                "digest": r.input_digest,
                "output": r.output_file,
                "quarantine": r.quarantine_file,
            }
            for r in results
        ],
        "batch_run": run_id,
    }


def record_batch(
    registry: Registry,
    model: BatchModel,
    source: str,
    output: str,
    batch_id: str,
    results: list[batch.FileResult],
    drift: dict[str, Any],
    seconds: float,
) -> str:
    """The batch as an MLflow run in ``<experiment>-batch``: what was scored, with what, where it went."""
    client = registry.client
    rows = sum(r.rows for r in results)
    quarantined = sum(r.quarantined for r in results)
    inputs = hashlib.sha256(
        "".join(f"{r.input_file}:{r.input_digest}" for r in results).encode()
    ).hexdigest()[:16]
    run = client.create_run(
        registry.experiment("batch"),
        run_name=f"batch-v{model.version}",
        tags={
            "model": model.name,
            "model_version": model.version,
            "model_run_id": model.run_id,
            "batch_id": batch_id,
            "input": redact(source),
            "input_digest": inputs,
            "output": redact(output),
            "skew": "; ".join(drift["breaches"])[:4900] or "no breach",
        },
    )
    run_id = run.info.run_id
    for key, value in {
        "rows": rows,
        "scored": rows - quarantined,
        "quarantined": quarantined,
        "files": len(results),
        "seconds": seconds,
        "rows_per_s": rows / seconds if seconds else 0.0,
    }.items():
        client.log_metric(run_id, key, float(value))
    files = [{k: v for k, v in asdict(r).items() if k != "sample"} for r in results]
    client.log_text(run_id, json.dumps({"batch_id": batch_id, "files": files}, indent=2), "batch.json")
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)


@flow(name="batch-score")
def batch_score_flow(
    source: str,
    output: str,
    alias: str = CHAMPION,
    version: str | None = None,
    on_skew: SkewAction = "warn",
    thresholds: monitor.MonitorThresholds | None = None,
    chunk_rows: int | None = None,
) -> dict[str, Any]:
    """Score every row of ``source`` (a CSV or Parquet file, a folder or glob of them, any fsspec URL) with
    the model version behind ``alias`` (or ``version``) into Parquet under ``output``."""
    began = time.perf_counter()
    settings = Settings()
    model = resolve_model(settings, alias, version)
    files = batch.input_files(source)
    reports = [check_schema(url, model.dataset) for url in files]
    refused = [r for r in reports if not r.passed]
    if refused:
        report = "\n\n".join(r.to_markdown() for r in refused)
        create_markdown_artifact(
            report, key=artifact_key("batch", settings.model_name), description="refused"
        )
        raise BatchRefusedError(f"{len(refused)} of {len(files)} inputs refused, nothing scored:\n{report}")
    root = output.rstrip("/")
    names = batch.output_names(files)
    batch_id = str(prefect.runtime.flow_run.id)
    provenance = batch.Provenance(model.name, model.version, model.run_id, batch_id)
    model_url = batch.put_model(root, model.name, model.version, model.onnx)
    results = score_files(
        model_url,
        model.dataset,
        {url: posixpath.join(root, name) for url, name in names.items()},
        {url: posixpath.join(root, batch.QUARANTINE_DIR, name) for url, name in names.items()},
        provenance,
        chunk_rows or settings.batch_chunk_rows,
    )
    lost = batch.discard_partials(output)
    for left in lost:
        log_stage("batch", "removed %s, left by an attempt lost mid-file", left)
    drift = skew(model, results, thresholds or monitor.MonitorThresholds())
    seconds = time.perf_counter() - began
    run_id = record_batch(gateway(settings), model, source, output, batch_id, results, drift, seconds)
    inference_records.append_batch_record(
        settings.inference_log_dir, batch_log_record(model, batch_id, run_id, results)
    )
    create_markdown_artifact(
        summary_markdown(model, source, output, results, drift),
        key=artifact_key("batch", settings.model_name),
        description=f"{model.name} v{model.version}: {sum(r.rows for r in results)} rows",
    )
    rows = sum(r.rows for r in results)
    quarantined = sum(r.quarantined for r in results)
    log_stage(
        "batch",
        "version=%s rows=%d scored=%d quarantined=%d files=%d run=%s skew=%s",
        model.version, rows, rows - quarantined, quarantined, len(results), run_id,
        drift["breaches"] or "none",
    )  # fmt: skip
    answer = {
        "model": model.name,
        "version": model.version,
        "batch_id": batch_id,
        "batch_run": run_id,
        "rows": rows,
        "scored": rows - quarantined,
        "quarantined": quarantined,
        "outputs": [r.output_file for r in results],
        "quarantine": [r.quarantine_file for r in results if r.quarantine_file],
        "skew": drift["breaches"],
        "lost_attempts": len(lost),  # files a lost worker had begun: scored again, whole, elsewhere
        "scoring_s": scoring_span(results),
    }
    if drift["breaches"] and on_skew == "fail":
        # Prefect makes a returned state the run's final state; the caller gets ``answer`` as its data.
        message = f"skew against the training profile: {'; '.join(drift['breaches'])}"
        return cast(dict[str, Any], Failed(message=message, data=answer))
    return answer
