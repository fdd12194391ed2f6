"""The training pipeline flow: validate -> train -> register -> convert -> gate -> promote -> deploy.

Each task is a thin wrapper around a plain function; the flow only wires them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import mlflow.artifacts
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from sklearn.pipeline import Pipeline

from flows import convert, deploy, gate, promote, register, train, validate
from flows.tracking import connect, experiment_id, git_commit
from models import datasets
from models.registry import Tag
from models.settings import Settings


@dataclass(frozen=True)
class PipelineResult:
    model_name: str
    version: str | None
    run_id: str | None
    verdict: str
    reasons: list[str]
    champion: str | None
    served_url: str | None


def _artifact_key(*parts: str) -> str:
    return "-".join(parts).lower().replace("_", "-")


@task(cache_policy=NONE)
def validate_data(source: str, spec: datasets.DatasetSpec) -> tuple[pd.DataFrame, validate.ValidationReport]:
    frame = datasets.load_frame(source)
    report = validate.validate_frame(frame, spec)
    create_markdown_artifact(
        report.to_markdown(), key=_artifact_key("data-validation", spec.name), description=report.summary
    )
    get_run_logger().info(
        "stage=validate dataset=%s verdict=%s (%s)",
        spec.name,
        "passed" if report.passed else "failed",
        report.summary,
    )
    if not report.passed:
        raise validate.DataValidationError(report)
    return frame, report


@task(cache_policy=NONE)
def train_model(
    frame: pd.DataFrame,
    spec: datasets.DatasetSpec,
    recipe: str,
    source: str,
    validation: str,
    settings: Settings,
) -> tuple[train.TrainResult, Pipeline, datasets.Split, str]:
    client = connect(settings)
    split = datasets.split(frame, spec)
    data_digest = datasets.digest(frame)
    pipeline = train.fit(split, recipe)
    result = train.track_training(
        pipeline,
        split,
        recipe=recipe,
        experiment_id=experiment_id(client, settings),
        data_source=source,
        data_digest=data_digest,
        validation=validation,
        git_commit=git_commit(),
    )
    get_run_logger().info("stage=train recipe=%s run=%s metrics=%s", recipe, result.run_id, result.metrics)
    return result, pipeline, split, data_digest


@task(cache_policy=NONE)
def register_version(settings: Settings, result: train.TrainResult, tags: dict[str, str]) -> str:
    version = register.register(connect(settings), settings.model_name, result, tags)
    get_run_logger().info("stage=register model=%s version=%s", settings.model_name, version)
    return version


@task(cache_policy=NONE)
def convert_to_onnx(
    settings: Settings, pipeline: Pipeline, split: datasets.Split, version: str, run_id: str, tolerance: float
) -> convert.ConvertResult:
    result = convert.convert_version(
        connect(settings),
        pipeline,
        split,
        model_name=settings.model_name,
        version=version,
        run_id=run_id,
        tolerance=tolerance,
    )
    get_run_logger().info(
        "stage=convert version=%s converted=%s parity=%s",
        version,
        result.converted,
        result.parity.passed if result.parity else None,
    )
    return result


@task(cache_policy=NONE)
def run_gate(
    settings: Settings,
    version: str,
    metrics: dict[str, float],
    conversion: convert.ConvertResult,
    config: gate.GateConfig,
) -> gate.GateResult:
    result = gate.evaluate_gate(metrics, conversion, config)
    gate.record_gate(connect(settings), settings.model_name, version, result)
    create_table_artifact(
        result.table(),
        key=_artifact_key("gate", settings.model_name),
        description=f"Gate for {settings.model_name} v{version}: {'passed' if result.passed else 'rejected'}",
    )
    get_run_logger().info(
        "stage=gate version=%s verdict=%s reasons=%s",
        version,
        "passed" if result.passed else "rejected",
        result.reasons or "none",
    )
    return result


@task(cache_policy=NONE)
def promote_version(settings: Settings, version: str, decided_by: str) -> str | None:
    previous = promote.promote(
        connect(settings), settings.model_name, version, decided_by=decided_by, decision="approved"
    )
    get_run_logger().info("stage=promote champion=%s previous=%s by=%s", version, previous, decided_by)
    return previous


@task(cache_policy=NONE)
def deploy_local_service(settings: Settings, version: str, tolerance: float) -> deploy.GoldenCheck:
    client = connect(settings)
    service = deploy.LocalService(settings)
    action = deploy.deploy_local(service, version)
    golden_uri = client.get_model_version(settings.model_name, version).tags[Tag.GOLDEN_URI]
    golden: dict[str, Any] = mlflow.artifacts.load_dict(golden_uri)
    check = deploy.golden_check(service.url, golden, version, tolerance)
    get_run_logger().info(
        "stage=deploy service=%s (%s) served=%s golden=%d/%d match verdict=%s",
        service.url,
        action,
        check.served_version,
        check.rows - check.mismatches,
        check.rows,
        "passed" if check.passed else "failed",
    )
    if not check.passed:
        raise deploy.ServiceError(f"post-deploy golden check failed: {check}")
    return check


@flow(name="training-pipeline", log_prints=True)
def training_pipeline(
    data_source: str = "demo:breast_cancer",
    dataset: str = "breast_cancer",
    recipe: str = "logistic_regression",
    gate_config: gate.GateConfig | None = None,
    promotion: Literal["auto", "none"] = "auto",
    deploy_target: Literal["local", "none"] = "local",
) -> PipelineResult:
    """Validate data, train a recipe, register, convert to ONNX, gate, promote and deploy."""
    settings = Settings()
    config = gate_config or gate.GateConfig()
    spec = datasets.get_spec(dataset)
    frame, report = validate_data(data_source, spec)
    trained, pipeline, split, data_digest = train_model(
        frame, spec, recipe, data_source, report.summary, settings
    )
    tags = register.lineage_tags(
        trained,
        recipe=recipe,
        data_source=data_source,
        data_digest=data_digest,
        rows=len(frame),
        validation=report.summary,
        git_commit=git_commit(),
    )
    version = register_version(settings, trained, tags)
    conversion = convert_to_onnx(settings, pipeline, split, version, trained.run_id, config.parity_tolerance)
    verdict = run_gate(settings, version, trained.metrics, conversion, config)
    if not verdict.passed:
        return PipelineResult(
            settings.model_name, version, trained.run_id, "rejected", verdict.reasons, None, None
        )
    if promotion == "none":
        return PipelineResult(settings.model_name, version, trained.run_id, "challenger", [], None, None)
    promote_version(settings, version, decided_by="pipeline (auto)")
    if deploy_target == "none":
        return PipelineResult(settings.model_name, version, trained.run_id, "champion", [], version, None)
    deploy_local_service(settings, version, config.parity_tolerance)
    return PipelineResult(
        settings.model_name, version, trained.run_id, "champion", [], version, settings.serve_url
    )
