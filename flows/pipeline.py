"""Prefect flows: the training pipeline, and manual promotion.

Each task is a thin wrapper around a plain function in its stage module; the flows only wire them.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from uuid import UUID

import httpx
import mlflow.artifacts
import pandas as pd
import prefect.runtime.flow_run
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.states import Completed
from sklearn.pipeline import Pipeline

from flows import card, convert, deploy, evaluate, gate, monitor, promote, register, rollout, train, validate
from flows.checks import DeployChecks, Replica
from flows.tracking import alias_version, connect, experiment_id, git_commit
from models import datasets
from models.recipes import get_recipe
from models.registry import CHALLENGER, CHAMPION, PROFILE_ARTIFACT, Tag
from models.settings import Settings, redact

Promotion = Literal["auto", "approval", "none"]
DeployTarget = Literal["local", "fleet"]


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


def _artifact_key(*parts: str) -> str:
    return "-".join(parts).lower().replace("_", "-")


def _log(stage: str, message: str, *args: object) -> None:
    get_run_logger().info(f"stage={stage} " + message, *args)


class RegistryUnavailableError(RuntimeError):
    """The MLflow tracking server does not answer: nothing can be trained, registered or promoted."""


def registry_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise RegistryUnavailableError unless the tracking server answers ``/health`` (local store: no-op)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        status = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout_s).status_code
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(
            redact(
                f"the MLflow registry at {uri} is unreachable ({type(exc).__name__}: {exc}); "
                "nothing was trained or registered"
            )
        ) from None
    if status != 200:
        raise RegistryUnavailableError(redact(f"the MLflow registry at {uri} answers /health with {status}"))


@task(cache_policy=NONE)
def check_registry(settings: Settings) -> None:
    """First, before any data is read: a run started while the registry is down fails clearly and retries."""
    registry_reachable(settings.resolved_tracking_uri)
    _log("registry", "tracking=%s reachable", redact(settings.resolved_tracking_uri))


@task(cache_policy=NONE)
def validate_data(source: str, spec: datasets.DatasetSpec) -> tuple[pd.DataFrame, validate.ValidationReport]:
    frame, report = validate.validate_source(source, spec)
    create_markdown_artifact(
        report.to_markdown(), key=_artifact_key("data-validation", spec.name), description=report.summary
    )
    _log(
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
    split: datasets.Split, recipe: str, source: str, data_digest: str, validation: str, settings: Settings
) -> tuple[train.TrainResult, Pipeline]:
    client = connect(settings)
    began = time.perf_counter()
    pipeline = train.fit(split, recipe)
    fit_seconds = time.perf_counter() - began
    result = train.track_training(
        pipeline,
        split,
        recipe=recipe,
        experiment_id=experiment_id(client, settings),
        data_source=source,
        data_digest=data_digest,
        validation=validation,
        git_commit=git_commit(),
        fit_seconds=fit_seconds,
    )
    _log("train", "recipe=%s run=%s fit=%.2fs metrics=%s", recipe, result.run_id, fit_seconds, result.metrics)
    return result, pipeline


def training_key(data_digest: str, recipe: str) -> str:
    """Two trainings of the same recipe (its parameters are fixed by its name) on the same data."""
    return hashlib.sha256(f"{data_digest}|{recipe}".encode()).hexdigest()[:16]


# A flow run in one of these states will not finish what it started: its version may be taken over.
ABANDONED = {"CRASHED", "FAILED", "CANCELLED"}


def flow_run_state(flow_run_id: str) -> str | None:
    """The run's state type on this Prefect server; None when it cannot say (unknown run, no server)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as prefect_client:
            state = prefect_client.read_flow_run(UUID(flow_run_id)).state
    except Exception:  # noqa: BLE001 - not known here: never taken over
        return None
    return state.type.value if state is not None else None


def resumable_version(
    client: MlflowClient, model_name: str, key: str, flow_run_id: str
) -> tuple[str, str] | None:
    """(version, run id) of this training registered by this flow run (a retry) or by an abandoned one.

    A rerun after a crash takes that version over instead of registering a duplicate; a version of a run
    still in progress, or of one that completed, is left alone (a deliberate rerun registers anew).
    """
    versions = client.search_model_versions(f"name='{model_name}'")
    for found in sorted(versions, key=lambda v: -int(v.version)):
        tags = found.tags
        owner = tags.get(Tag.FLOW_RUN)
        if tags.get(Tag.TRAINING_KEY) != key or not owner:
            continue
        if owner == flow_run_id or flow_run_state(owner) in ABANDONED:
            return str(found.version), str(found.run_id)
    return None


@task(cache_policy=NONE)
def register_version(settings: Settings, result: train.TrainResult, tags: dict[str, str]) -> tuple[str, str]:
    """Register a new version, or take over the one an abandoned run left for the same training."""
    client = connect(settings)
    flow_run_id = str(prefect.runtime.flow_run.id)
    found = resumable_version(client, settings.model_name, tags[Tag.TRAINING_KEY], flow_run_id)
    if found is not None:
        version, run_id = found
        client.delete_run(result.run_id)  # this attempt's duplicate training run; the version's run stays
        _log(
            "register",
            "model=%s version=%s run=%s reused (same data and recipe, left by an abandoned run)",
            settings.model_name,
            version,
            run_id,
        )
        return version, run_id
    version = register.register(client, settings.model_name, result, {**tags, Tag.FLOW_RUN: flow_run_id})
    _log("register", "model=%s version=%s run=%s", settings.model_name, version, result.run_id)
    return version, result.run_id


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
    parity = result.parity.passed if result.parity else None
    _log(
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
    scores = evaluate.score_champion(connect(settings), settings.model_name, split)
    _log(
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
    client = connect(settings)
    gate.record_gate(client, settings.model_name, version, result)
    compared = champion.version if champion is not None else "none"
    client.set_model_version_tag(settings.model_name, version, Tag.GATE_CHAMPION, compared)
    create_table_artifact(
        result.table(),
        key=_artifact_key("gate", settings.model_name),
        description=f"Gate for {settings.model_name} v{version}: {result.verdict}",
    )
    _log("gate", "version=%s verdict=%s reasons=%s", version, result.verdict, result.reasons or "none")
    return result


# The server refuses any way out of a Paused state whose own deadline has passed (the run can then
# only fail), so the flow declines by itself at its deadline while the pause is still open.
PAUSE_GRACE_S = 60


def _decline_at_deadline(flow_run_id: UUID, timeout_s: int) -> None:
    reason = f"no decision within {timeout_s} s"
    with contextlib.suppress(Exception):  # a reviewer answered first: the run is no longer paused
        resume_flow_run(flow_run_id, run_input={"approve": False, "reviewer": "timeout", "reason": reason})


def request_approval(evidence: str, timeout_s: int) -> promote.Decision:
    """Pause the flow run with a form in the Prefect UI; no answer within the timeout rejects."""
    flow_run_id = UUID(str(prefect.runtime.flow_run.id))
    deadline = threading.Timer(timeout_s, _decline_at_deadline, args=(flow_run_id, timeout_s))
    deadline.daemon = True
    deadline.start()
    try:
        answer = pause_flow_run(
            wait_for_input=promote.ApprovalInput.with_initial_data(description=evidence),
            timeout=timeout_s + PAUSE_GRACE_S,
            poll_interval=2,
        )
    except FlowPauseTimeout:
        return promote.Decision(False, "timeout", f"no decision within {timeout_s} s")
    finally:
        deadline.cancel()
    return promote.Decision(answer.approve, answer.reviewer, answer.reason)


@task(cache_policy=NONE)
def record_declined(settings: Settings, version: str, decision: promote.Decision) -> None:
    client = connect(settings)
    promote.record_decision(client, settings.model_name, version, decision)
    if alias_version(client, settings.model_name, CHALLENGER) == version:
        client.delete_registered_model_alias(settings.model_name, CHALLENGER)
    _log("promote", "version=%s verdict=declined by=%s reason=%s", version, decision.by, decision.reason)


@task(cache_policy=NONE)
def promote_version(
    settings: Settings,
    version: str,
    decision: promote.Decision,
    force: bool = False,
    expected_champion: str | None = promote.ANY,
) -> str | None:
    previous = promote.promote(
        connect(settings),
        settings.model_name,
        version,
        decision,
        force=force,
        expected_champion=expected_champion,
    )
    _log("promote", "version=%s verdict=champion previous=%s by=%s", version, previous, decision.by)
    return previous


@task(cache_policy=NONE)
def write_model_card(settings: Settings, facts: card.CardFacts) -> str:
    uri = card.log_model_card(connect(settings), facts)
    create_markdown_artifact(
        card.model_card(facts),
        key=_artifact_key("model-card", settings.model_name),
        description=f"Model card for {settings.model_name} v{facts.version}",
    )
    _log("card", "version=%s card=%s", facts.version, uri)
    return uri


def replicas_for(settings: Settings, target: DeployTarget, replica_urls: list[str]) -> list[Replica]:
    """The local service (started if not running), or the given fleet of replica URLs."""
    if target == "local":
        deploy.ensure_running(deploy.LocalService(settings))
        return [deploy.local_replica(settings)]
    if not replica_urls:
        raise ValueError("deploy_target 'fleet' needs replica_urls")
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    return [Replica(url.rstrip("/"), api_key=api_key) for url in replica_urls]


def _rollout(settings: Settings, replicas: list[Replica], checks: DeployChecks) -> rollout.Rollout:
    client = connect(settings)

    def golden(version: str) -> dict[str, Any]:
        uri = client.get_model_version(settings.model_name, version).tags[Tag.GOLDEN_URI]
        loaded: dict[str, Any] = mlflow.artifacts.load_dict(uri)
        return loaded

    def publish(entry: rollout.DeploymentRecord) -> None:
        log = get_run_logger().info if entry.passed else get_run_logger().error
        log(
            "stage=%s version=%s verdict=%s %s",
            entry.action,
            entry.to_version,
            "passed" if entry.passed else "failed",
            entry.summary(),
        )
        create_table_artifact(
            entry.table(),
            key=_artifact_key(entry.action, settings.model_name),
            description=entry.summary()[:1000],
        )

    return rollout.Rollout(client, settings, replicas, checks, golden, publish)


@task(cache_policy=NONE)
def deploy_version(
    settings: Settings,
    version: str,
    target: DeployTarget,
    replica_urls: list[str],
    checks: DeployChecks,
    triggered_by: str,
    expected_champion: str | None = promote.ANY,
) -> rollout.DeploymentRecord:
    """Make the replicas serve ``version`` and prove it; roll back automatically if any check fails."""
    plan = _rollout(settings, replicas_for(settings, target, replica_urls), checks)
    return plan.deploy(version, triggered_by, expected_champion)


@task(cache_policy=NONE)
def rollback_version(
    settings: Settings,
    to_version: str | None,
    target: DeployTarget,
    replica_urls: list[str],
    checks: DeployChecks,
    triggered_by: str,
) -> rollout.DeploymentRecord:
    plan = _rollout(settings, replicas_for(settings, target, replica_urls), checks)
    return plan.rollback(to_version or plan.previous_live(), triggered_by)


def ended(name: str, message: str, result: PipelineResult) -> PipelineResult:
    """End the flow run in a named Completed state (shown in the UI) that still returns ``result``.

    Prefect makes a state returned by a flow its final state and hands callers the state's data.
    """
    return cast(PipelineResult, Completed(name=name, message=message, data=result))


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
        evidence = promote.evidence_markdown(
            candidate.settings.model_name,
            candidate.version,
            candidate.metrics,
            champion,
            candidate.validation,
            verdict,
        )
        return request_approval(evidence, approval_timeout_s)
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
            promote_version(settings, version, decision, expected_champion=expected)
        except promote.PromotionSupersededError as exc:
            _log("promote", "version=%s superseded (attempt %d/%d): %s", version, attempt, GATE_ATTEMPTS, exc)
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
) -> PipelineResult:
    """Validate data, train a recipe, register, convert to ONNX, gate, promote and deploy.

    A registry that does not answer fails the first step clearly; it is retried ``registry_retries``
    times, ``registry_retry_delay_s`` apart, before the run fails.
    """
    settings = Settings()
    config = gate_config or gate.GateConfig()
    spec = datasets.get_spec(dataset)
    check_parameters(spec, recipe, config)
    check_registry.with_options(retries=registry_retries, retry_delay_seconds=registry_retry_delay_s)(
        settings
    )

    frame, report = validate_data(data_source, spec)
    split = datasets.split(frame, spec)
    data_digest = datasets.digest(frame)
    trained, pipeline = train_model(split, recipe, data_source, data_digest, report.summary, settings)
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
    tags[Tag.TRAINING_KEY] = training_key(data_digest, recipe)
    version, run_id = register_version(settings, trained, tags)
    conversion = convert_to_onnx(settings, pipeline, split, version, run_id, config.parity_tolerance)
    candidate = Candidate(settings, version, split, trained.metrics, conversion, report.summary)
    gated = gate_and_promote(candidate, config, promotion, approval_timeout_s)
    verdict, decision = gated.verdict, gated.decision

    facts = card.CardFacts(
        model_name=settings.model_name,
        version=version,
        run_id=run_id,
        recipe=get_recipe(recipe),
        spec=spec,
        data_source=data_source,
        data_digest=data_digest,
        rows=len(frame),
        validation=report.summary,
        git_commit=commit,
        metrics=trained.metrics,
        champion=gated.champion,
        gate=verdict,
        conversion=conversion,
        decision=decision,
    )

    def result(
        outcome: str, reasons: list[str], champion_version: str | None, url: str | None
    ) -> PipelineResult:
        return PipelineResult(settings.model_name, version, run_id, outcome, reasons, champion_version, url)

    if not verdict.passed:
        write_model_card(settings, facts)
        message = f"v{version} rejected by the gate: " + "; ".join(verdict.reasons)
        return ended("Rejected", message, result("rejected", verdict.reasons, None, None))
    if decision is None:
        write_model_card(settings, facts)
        return result("challenger", [], None, None)
    if not decision.approved:
        record_declined(settings, version, decision)
        write_model_card(settings, facts)
        message = f"v{version} not promoted: {decision.by}: {decision.reason}"
        return ended("Declined", message, result("declined", [decision.reason], None, None))

    write_model_card(settings, facts)
    if deploy_target == "none":
        return result("champion", [], version, None)
    try:
        deploy_version(
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
        newer = alias_version(connect(settings), settings.model_name, CHAMPION)
        return ended("Superseded", message, result("superseded", [str(exc)], newer, None))
    url = settings.serve_url if deploy_target == "local" else ",".join(replica_urls or [])
    return result("champion", [], version, url)


@flow(name="promote")
def promote_flow(
    version: str,
    requested_by: str,
    reason: str,
    force: bool = False,
    deploy_target: DeployTarget | Literal["none"] = "local",
    replica_urls: list[str] | None = None,
    deploy_checks: DeployChecks | None = None,
) -> str | None:
    """Promote a named version by hand, then deploy it (with automated rollback).

    Refuses a version that failed the gate unless ``force``.
    """
    settings = Settings()
    previous = promote_version(settings, version, promote.Decision(True, requested_by, reason), force=force)
    if deploy_target != "none":
        deploy_version(
            settings,
            version,
            deploy_target,
            replica_urls or [],
            deploy_checks or DeployChecks(),
            f"promote by {requested_by}",
        )
    return previous


@flow(name="deploy")
def deploy_flow(
    requested_by: str,
    deploy_target: DeployTarget = "local",
    replica_urls: list[str] | None = None,
    deploy_checks: DeployChecks | None = None,
) -> str:
    """Deploy the current ``champion`` to the target and prove it serves; roll back if it does not."""
    settings = Settings()
    version = alias_version(connect(settings), settings.model_name, CHAMPION)
    if version is None:
        raise ValueError(f"{settings.model_name} has no champion to deploy")
    entry = deploy_version(
        settings,
        version,
        deploy_target,
        replica_urls or [],
        deploy_checks or DeployChecks(),
        f"deploy by {requested_by}",
    )
    return entry.summary()


@flow(name="rollback")
def rollback_flow(
    requested_by: str,
    reason: str,
    to_version: str | None = None,
    deploy_target: DeployTarget = "local",
    replica_urls: list[str] | None = None,
    deploy_checks: DeployChecks | None = None,
) -> str:
    """Move ``champion`` back to the previous live version (or ``to_version``), and prove it serves."""
    settings = Settings()
    entry = rollback_version(
        settings,
        to_version,
        deploy_target,
        replica_urls or [],
        deploy_checks or DeployChecks(),
        f"rollback by {requested_by}: {reason}",
    )
    return entry.summary()


@task(cache_policy=NONE)
def monitor_version(
    settings: Settings,
    version: str,
    since: float,
    until: float,
    labels_path: str | None,
    thresholds: monitor.MonitorThresholds,
) -> monitor.MonitorReport:
    client = connect(settings)
    run_id = str(client.get_model_version(settings.model_name, version).run_id)
    profile: dict[str, Any] = mlflow.artifacts.load_dict(f"runs:/{run_id}/{PROFILE_ARTIFACT}")
    gate_metrics = {
        k.removeprefix("holdout_"): v
        for k, v in client.get_run(run_id).data.metrics.items()
        if k.startswith("holdout_")
    }
    report = monitor.monitor_window(
        settings.inference_log_dir,
        model=settings.model_name,
        version=version,
        profile=profile,
        gate_metrics=gate_metrics,
        since=since,
        until=until,
        thresholds=thresholds,
        labels=Path(labels_path) if labels_path else None,
    )
    create_markdown_artifact(
        monitor.to_markdown(report),
        key=_artifact_key("monitor", settings.model_name),
        description=f"{settings.model_name} v{version}: {'; '.join(report.breaches) or 'no breach'}"[:1000],
    )
    _log(
        "monitor",
        "version=%s rows=%d verdict=%s %s",
        version,
        report.rows,
        "breach" if report.breaches else "ok",
        report.breaches or "",
    )
    return report


@task(cache_policy=NONE)
def act_on_breach(
    settings: Settings, report: monitor.MonitorReport, retrain: bool, retrain_deployment: str
) -> str | None:
    """Emit a Prefect event for the breach and, when asked, start a run of the training deployment."""
    monitor_run = str(prefect.runtime.flow_run.id)
    emit_event(
        event="mlops.monitor.breach",
        resource={
            "prefect.resource.id": f"mlops.model.{settings.model_name}",
            "mlops.version": report.version,
        },
        payload={"breaches": report.breaches, "monitor_flow_run": monitor_run},
    )
    if not retrain:
        return None
    triggered = cast(
        FlowRun,
        run_deployment(
            retrain_deployment, timeout=0, tags=["caused-by-monitor", f"monitor-run:{monitor_run}"]
        ),
    )
    _log(
        "monitor", "version=%s breach -> started %s run %s", report.version, retrain_deployment, triggered.id
    )
    return str(triggered.id)


@flow(name="monitor")
def monitor_flow(
    version: str | None = None,
    window_minutes: float = 60,
    until: float | None = None,
    labels_path: str | None = None,
    thresholds: monitor.MonitorThresholds | None = None,
    retrain: bool = False,
    retrain_deployment: str = "training-pipeline/training-pipeline",
) -> dict[str, Any]:
    """Drift, volume, errors, latency and live quality of a version over a window of its inference log."""
    settings = Settings()
    client = connect(settings)
    chosen = version or alias_version(client, settings.model_name, CHAMPION)
    if chosen is None:
        raise ValueError(f"{settings.model_name} has no champion to monitor")
    end = until if until is not None else time.time()
    report = monitor_version(
        settings,
        chosen,
        end - window_minutes * 60,
        end,
        labels_path,
        thresholds or monitor.MonitorThresholds(),
    )
    triggered = act_on_breach(settings, report, retrain, retrain_deployment) if report.breaches else None
    run_id = monitor.record_report(client, settings, report, triggered)
    return {
        "version": chosen,
        "rows": report.rows,
        "breaches": report.breaches,
        "monitor_run": run_id,
        "triggered_flow_run": triggered,
    }
