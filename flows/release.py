"""Release: promote a version, deploy the champion, roll back; each deploy proven by the post-deploy checks.

``deploy_version`` makes the replicas (the local service, or a fleet by URL) serve a version through the
``champion`` alias and proves it with the checks of ``DeployChecks``; any failed check moves the alias back
(``flows/rollout.py``). The flows are what the ``promote``, ``deploy`` and ``rollback`` deployments run.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from flows import card, deploy, promote, rollout
from flows.checks import DeployChecks, Replica
from flows.gateway import gateway
from flows.runs import artifact_key, log_stage
from models.registry import CHAMPION
from models.settings import Settings

DeployTarget = Literal["local", "fleet"]


@task(cache_policy=NONE)
def promote_version(
    settings: Settings,
    version: str,
    decision: promote.Decision,
    force: bool = False,
    expected_champion: str | None = promote.ANY,
) -> str | None:
    previous = promote.promote(
        gateway(settings).client,
        settings.model_name,
        version,
        decision,
        force=force,
        expected_champion=expected_champion,
    )
    log_stage("promote", "version=%s verdict=champion previous=%s by=%s", version, previous, decision.by)
    event = f"its promotion by {decision.by}"
    card.refresh(gateway(settings).client, settings, version, previous, event=event)
    return previous


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
    registry = gateway(settings)

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
            key=artifact_key(entry.action, settings.model_name),
            description=entry.summary()[:1000],
        )

    return rollout.Rollout(registry.client, settings, replicas, checks, registry.golden, publish)


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
    try:
        entry = plan.deploy(version, triggered_by, expected_champion)
    except rollout.DeploymentFailedError:  # failed its checks, and was rolled back where it could be
        refresh_after_rollback(settings, version, f"a failed deploy of v{version} ({triggered_by})")
        raise
    card.refresh(gateway(settings).client, settings, version, event=f"its deploy ({triggered_by})")
    return entry


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
    current = _champion(settings)
    try:
        return plan.rollback(to_version or plan.previous_live(), triggered_by)
    finally:
        refresh_after_rollback(settings, current, f"a rollback ({triggered_by})")


def _champion(settings: Settings) -> str | None:
    try:
        return gateway(settings).alias(CHAMPION)
    except Exception:  # noqa: BLE001 - only the documents to regenerate depend on it
        return None


def refresh_after_rollback(settings: Settings, version: str | None, event: str) -> None:
    """The documents of the version rolled back from and of the champion now (a warning if they fail)."""
    card.refresh(gateway(settings).client, settings, version, _champion(settings), event=event)


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
    version = gateway(settings).alias(CHAMPION)
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
