"""The training pipeline: validate data, train, register, convert to ONNX, gate, promote, deploy.

Each task is a thin wrapper around a plain function of its stage module (``validate``, ``train``,
``register``, ``convert``, ``evaluate``, ``gate``, ``card``); the gate and the promotion repeat while
another run moves the champion meanwhile; approval is ``flows/approval.py``, the deploy
``flows/release.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import prefect.runtime.flow_run
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from sklearn.pipeline import Pipeline

from flows import (
    approval,
    card,
    convert,
    evaluate,
    gate,
    promote,
    register,
    release,
    rollout,
    train,
    validate,
)
from flows.checks import DeployChecks
from flows.gateway import gateway
from flows.release import DeployTarget
from flows.runs import artifact_key, ended, log_stage
from flows.tracking import git_commit, registry_reachable
from models import datasets
from models.recipes import get_recipe
from models.registry import CHAMPION, Tag
from models.settings import Settings, redact

Promotion = Literal["auto", "approval", "none"]


@dataclass(frozen=True)
class PipelineResult:
    model_name: str
    version: str | None
    run_id: str | None
    # "champion", "challenger", "rejected" (gate), "declined" (reviewer or timeout), "superseded" (another
    # run promoted a newer version while this one deployed)
    verdict: str
    reasons: list[str]
    champion: str | None
    served_url: str | None


@task(cache_policy=NONE)
def check_registry(settings: Settings) -> None:
    """First, before any data is read: a run started while the registry is down fails clearly and retries."""
    registry_reachable(settings.resolved_tracking_uri)
    log_stage("registry", "tracking=%s reachable", redact(settings.resolved_tracking_uri))


@task(cache_policy=NONE)
def validate_data(source: str, spec: datasets.DatasetSpec) -> tuple[pd.DataFrame, validate.ValidationReport]:
    frame, report = validate.validate_source(source, spec)
    create_markdown_artifact(
        report.to_markdown(), key=artifact_key("data-validation", spec.name), description=report.summary
    )
    log_stage(
        "validate",
        "dataset=%s verdict=%s (%s)",
        spec.name,
        "passed" if report.passed else "failed",
        report.summary,
    )
    if not report.passed:
        raise validate.DataValidationError(report)
    return frame, report


@task(cache_policy=NONE)
def train_model(
    split: datasets.Split,
    recipe: str,
    source: str,
    data_digest: str,
    validation: validate.ValidationReport,
    settings: Settings,
) -> tuple[train.TrainResult, Pipeline]:
    registry = gateway(settings)
    began = time.perf_counter()
    pipeline = train.fit(split, recipe)
    fit_seconds = time.perf_counter() - began
    result = train.track_training(
        pipeline,
        split,
        recipe=recipe,
        experiment_id=registry.experiment(),
        data_source=source,
        data_digest=data_digest,
        validation=validation.summary,
        validation_report=validation.to_dict(),
        git_commit=git_commit(),
        fit_seconds=fit_seconds,
    )
    log_stage(
        "train", "recipe=%s run=%s fit=%.2fs metrics=%s", recipe, result.run_id, fit_seconds, result.metrics
    )
    return result, pipeline


@task(cache_policy=NONE)
def register_version(settings: Settings, result: train.TrainResult, tags: dict[str, str]) -> tuple[str, str]:
    """Register a new version, or take over the one an abandoned run left for the same training."""
    client = gateway(settings).client
    flow_run_id = str(prefect.runtime.flow_run.id)
    found = register.resumable_version(client, settings.model_name, tags[Tag.TRAINING_KEY], flow_run_id)
    if found is not None:
        version, run_id = found
        client.delete_run(result.run_id)  # this attempt's duplicate training run; the version's run stays
        log_stage(
            "register",
            "model=%s version=%s run=%s reused (same data and recipe, left by an abandoned run)",
            settings.model_name,
            version,
            run_id,
        )
        return version, run_id
    version = register.register(client, settings.model_name, result, {**tags, Tag.FLOW_RUN: flow_run_id})
    log_stage("register", "model=%s version=%s run=%s", settings.model_name, version, result.run_id)
    return version, result.run_id


@task(cache_policy=NONE)
def convert_to_onnx(
    settings: Settings, pipeline: Pipeline, split: datasets.Split, version: str, run_id: str, tolerance: float
) -> convert.ConvertResult:
    result = convert.convert_version(
        gateway(settings).client,
        pipeline,
        split,
        model_name=settings.model_name,
        version=version,
        run_id=run_id,
        tolerance=tolerance,
    )
    parity = result.parity.passed if result.parity else None
    log_stage(
        "convert",
        "version=%s converted=%s parity=%s error=%s",
        version,
        result.converted,
        parity,
        result.error,
    )
    return result


@task(cache_policy=NONE)
def score_champion(settings: Settings, split: datasets.Split) -> gate.ChampionScores | None:
    scores = evaluate.score_champion(gateway(settings).client, settings.model_name, split)
    log_stage(
        "gate",
        "champion=%s",
        "none (first model)" if scores is None else f"v{scores.version} {scores.metrics}",
    )
    return scores


@task(cache_policy=NONE)
def run_gate(
    settings: Settings,
    version: str,
    metrics: dict[str, float],
    conversion: convert.ConvertResult,
    champion: gate.ChampionScores | None,
    config: gate.GateConfig,
) -> gate.GateResult:
    result = gate.evaluate_gate(metrics, conversion, conversion.latency, champion, config)
    compared = champion.version if champion is not None else None
    gate.record_gate(gateway(settings).client, settings.model_name, version, result, compared)
    create_table_artifact(
        result.table(),
        key=artifact_key("gate", settings.model_name),
        description=f"Gate for {settings.model_name} v{version}: {result.verdict}",
    )
    log_stage("gate", "version=%s verdict=%s reasons=%s", version, result.verdict, result.reasons or "none")
    return result


@task(cache_policy=NONE)
def write_model_card(settings: Settings, version: str, outcome: str) -> str:
    """The version's technical documentation, from what the registry now holds (``flows/card.py``)."""
    published = card.regenerate(
        gateway(settings).client, settings, version, f"the training pipeline ({outcome})"
    )
    create_markdown_artifact(
        published.text,
        key=artifact_key("model-card", settings.model_name),
        description=f"Model card for {settings.model_name} v{version}",
    )
    log_stage("card", "version=%s card=%s", version, published.uri)
    return published.uri


def check_parameters(spec: datasets.DatasetSpec, recipe: str, config: gate.GateConfig) -> None:
    """Refuse a run whose parameters cannot work, before any data is read."""
    problems = config.problems_for(spec.task)
    chosen = get_recipe(recipe)
    if chosen.task != spec.task:
        problems.append(f"recipe {recipe!r} is for {chosen.task}, dataset {spec.name!r} is {spec.task}")
    if problems:
        raise ValueError("invalid pipeline parameters: " + "; ".join(problems))


GATE_ATTEMPTS = 3  # gate and promote again when another run moved the champion meanwhile


@dataclass(frozen=True)
class Gated:
    champion: gate.ChampionScores | None  # what the gate compared against
    verdict: gate.GateResult
    decision: promote.Decision | None  # None: promotion "none", or the gate rejected the version
    promoted: bool


@dataclass(frozen=True)
class Candidate:
    """What the gate and the promotion need to know about the version being decided."""

    settings: Settings
    version: str
    split: datasets.Split
    metrics: dict[str, float]
    conversion: convert.ConvertResult
    validation: str


def decide(
    candidate: Candidate,
    champion: gate.ChampionScores | None,
    verdict: gate.GateResult,
    promotion: Promotion,
    approval_timeout_s: int,
) -> promote.Decision | None:
    if verdict.passed and promotion == "auto":
        return promote.Decision(True, "pipeline (auto)", "passed the gate")
    if verdict.passed and promotion == "approval":
        evidence = approval.evidence_markdown(
            candidate.settings.model_name,
            candidate.version,
            candidate.metrics,
            champion,
            candidate.validation,
            verdict,
        )
        return approval.request_approval(evidence, approval_timeout_s)
    return None


def gate_and_promote(
    candidate: Candidate, config: gate.GateConfig, promotion: Promotion, approval_timeout_s: int
) -> Gated:
    """Gate against the current champion and move it only if it is still that champion (else gate again)."""
    settings, version = candidate.settings, candidate.version
    for attempt in range(1, GATE_ATTEMPTS + 1):
        champion = score_champion(settings, candidate.split)
        verdict = run_gate(settings, version, candidate.metrics, candidate.conversion, champion, config)
        decision = decide(candidate, champion, verdict, promotion, approval_timeout_s)
        if decision is None or not decision.approved:
            return Gated(champion, verdict, decision, promoted=False)
        expected = champion.version if champion is not None else None
        try:
            release.promote_version(settings, version, decision, expected_champion=expected)
        except promote.PromotionSupersededError as exc:
            log_stage(
                "promote", "version=%s superseded (attempt %d/%d): %s", version, attempt, GATE_ATTEMPTS, exc
            )
            continue
        return Gated(champion, verdict, decision, promoted=True)
    raise promote.PromotionSupersededError(
        f"v{version}: the champion moved under every one of {GATE_ATTEMPTS} gate attempts; not promoted"
    )


@flow(name="training-pipeline", log_prints=True)
def training_pipeline(
    data_source: str = "demo:breast_cancer",
    dataset: str = "breast_cancer",
    recipe: str = "logistic_regression",
    gate_config: gate.GateConfig | None = None,
    promotion: Promotion = "auto",
    approval_timeout_s: int = 3600,
    deploy_target: DeployTarget | Literal["none"] = "local",
    replica_urls: list[str] | None = None,
    deploy_checks: DeployChecks | None = None,
    registry_retries: int = 6,
    registry_retry_delay_s: float = 10.0,
    model_name: str | None = None,
) -> PipelineResult:
    """Validate data, train a recipe, register, convert to ONNX, gate, promote and deploy.

    A registry that does not answer fails the first step clearly; it is retried ``registry_retries``
    times, ``registry_retry_delay_s`` apart, before the run fails. ``model_name``: the registered model
    (one per use case); unset, ``MLOPS_MODEL_NAME``.
    """
    settings = Settings()
    if model_name:
        settings = settings.model_copy(update={"model_name": model_name})
    config = gate_config or gate.GateConfig()
    spec = datasets.get_spec(dataset)
    check_parameters(spec, recipe, config)
    check_registry.with_options(retries=registry_retries, retry_delay_seconds=registry_retry_delay_s)(
        settings
    )

    frame, report = validate_data(data_source, spec)
    split = datasets.split(frame, spec)
    data_digest = datasets.digest(frame)
    trained, pipeline = train_model(split, recipe, data_source, data_digest, report, settings)
    commit = git_commit()
    tags = register.lineage_tags(
        trained,
        recipe=recipe,
        data_source=data_source,
        data_digest=data_digest,
        rows=len(frame),
        validation=report.summary,
        git_commit=commit,
    )
    tags[Tag.TRAINING_KEY] = register.training_key(data_digest, recipe)
    version, run_id = register_version(settings, trained, tags)
    conversion = convert_to_onnx(settings, pipeline, split, version, run_id, config.parity_tolerance)
    candidate = Candidate(settings, version, split, trained.metrics, conversion, report.summary)
    gated = gate_and_promote(candidate, config, promotion, approval_timeout_s)
    verdict, decision = gated.verdict, gated.decision

    def result(
        outcome: str, reasons: list[str], champion_version: str | None, url: str | None
    ) -> PipelineResult:
        return PipelineResult(settings.model_name, version, run_id, outcome, reasons, champion_version, url)

    if not verdict.passed:
        write_model_card(settings, version, "rejected by the gate")
        message = f"v{version} rejected by the gate: " + "; ".join(verdict.reasons)
        return ended("Rejected", message, result("rejected", verdict.reasons, None, None))
    if decision is None:
        write_model_card(settings, version, "challenger, not offered for promotion")
        return result("challenger", [], None, None)
    if not decision.approved:
        approval.record_declined(settings, version, decision)
        write_model_card(settings, version, "declined")
        message = f"v{version} not promoted: {decision.by}: {decision.reason}"
        return ended("Declined", message, result("declined", [decision.reason], None, None))

    write_model_card(settings, version, "promoted")
    if deploy_target == "none":
        return result("champion", [], version, None)
    try:
        release.deploy_version(
            settings,
            version,
            deploy_target,
            replica_urls or [],
            deploy_checks or DeployChecks(),
            "pipeline",
            expected_champion=version,
        )
    except rollout.DeploymentSupersededError as exc:
        message = f"v{version} was promoted, then superseded before its deploy finished: {exc}"
        newer = gateway(settings).alias(CHAMPION)
        return ended("Superseded", message, result("superseded", [str(exc)], newer, None))
    url = settings.serve_url if deploy_target == "local" else ",".join(replica_urls or [])
    return result("champion", [], version, url)
