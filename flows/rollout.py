"""Deploy a version to its replicas, prove it serves, and roll back automatically when it does not.

The registry alias ``champion`` is the only switch: replicas follow it by themselves. Deploying checks
that every replica serves the new version correctly; rolling back moves the alias to the last version that
was proven live, waits until every replica serves it again and checks it the same way.

Every deploy and rollback is one audit record: an MLflow run in the ``<experiment>-deployments``
experiment (from, to, trigger, check results, times), a tag on the versions concerned, and (in a flow) a
Prefect artifact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.checks import CheckResult, DeployChecks, Replica, verify_replica
from flows.promote import ANY, PromotionSupersededError, move_alias
from flows.tracking import alias_version, ensure_experiment
from models.registry import CHAMPION, Tag
from models.settings import Settings

HISTORY_TAG = "deployment.history"  # registered-model tag: versions proven live, oldest first
HISTORY_LENGTH = 50
Action = Literal["deploy", "rollback"]


class DeploymentFailedError(RuntimeError):
    """A deploy failed its checks (and was rolled back), or a rollback itself failed."""


class DeploymentSupersededError(DeploymentFailedError):
    """Another run moved ``champion`` while this one deployed: the alias is left where that run put it."""


@dataclass(frozen=True)
class DeploymentRecord:
    action: Action
    model: str
    from_version: str | None
    to_version: str
    triggered_by: str
    started_at: str
    finished_at: str
    passed: bool
    checks: list[CheckResult] = field(default_factory=list)
    restore_s: float | None = None  # rollback: alias moved -> every replica serving and passing again

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def table(self) -> list[dict[str, str]]:
        return [
            {"replica": c.replica, "check": c.name, "value": c.value, "threshold": c.threshold,
             "verdict": "pass" if c.passed else "fail"}
            for c in self.checks
        ]  # fmt: skip

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(c.line() for c in self.failed_checks)
        if self.restore_s is not None:
            verdict += f" (serving and passing again {self.restore_s:.1f}s after the alias moved)"
        move = f"v{self.from_version} -> v{self.to_version}"
        return f"{self.action} {self.model} {move} by {self.triggered_by}: {verdict}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def history(client: MlflowClient, model_name: str) -> list[str]:
    try:
        tags = client.get_registered_model(model_name).tags
    except MlflowException:
        return []
    return [v for v in tags.get(HISTORY_TAG, "").split(",") if v]


def _mark_live(client: MlflowClient, model_name: str, version: str, reason: str) -> None:
    past = history(client, model_name)
    if past and past[-1] != version:
        client.set_model_version_tag(model_name, past[-1], Tag.DEPLOYMENT_STATUS, "retired")
    if not past or past[-1] != version:
        past.append(version)
    client.set_registered_model_tag(model_name, HISTORY_TAG, ",".join(past[-HISTORY_LENGTH:]))
    client.set_model_version_tag(model_name, version, Tag.DEPLOYMENT_STATUS, "live")
    client.set_model_version_tag(model_name, version, Tag.DEPLOYMENT_REASON, reason)


def verify(
    replicas: Sequence[Replica], model_name: str, version: str, golden: dict[str, Any], checks: DeployChecks
) -> list[CheckResult]:
    """All replicas checked at once."""
    with ThreadPoolExecutor(max(1, len(replicas))) as pool:
        per_replica = pool.map(lambda r: verify_replica(r, model_name, version, golden, checks), replicas)
    return [result for results in per_replica for result in results]


def deployments_experiment(client: MlflowClient, settings: Settings) -> str:
    return ensure_experiment(client, settings, "deployments")


def record(client: MlflowClient, settings: Settings, entry: DeploymentRecord) -> str:
    """The audit record as an MLflow run, and a pointer to it on the target version."""
    run = client.create_run(
        deployments_experiment(client, settings),
        run_name=f"{entry.action}-v{entry.to_version}",
        tags={
            "action": entry.action,
            "model": entry.model,
            "from_version": str(entry.from_version),
            "to_version": entry.to_version,
            "triggered_by": entry.triggered_by,
            "started_at": entry.started_at,
            "finished_at": entry.finished_at,
            "result": "passed" if entry.passed else "failed",
            "summary": entry.summary()[:4900],
            "failed_checks": ", ".join(sorted({c.name for c in entry.failed_checks})) or "none",
            "restore_s": "" if entry.restore_s is None else f"{entry.restore_s:.2f}",
        },
    )
    client.log_text(run.info.run_id, json.dumps(asdict(entry), indent=2), "deployment.json")
    client.set_terminated(run.info.run_id, "FINISHED" if entry.passed else "FAILED")
    client.set_model_version_tag(
        settings.model_name,
        entry.to_version,
        f"deployment.last_{entry.action}",
        f"{entry.finished_at} run {run.info.run_id}",
    )
    return str(run.info.run_id)


def recent(client: MlflowClient, settings: Settings, limit: int = 5) -> list[dict[str, str]]:
    experiment = client.get_experiment_by_name(f"{settings.experiment_name}-deployments")
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit
    )
    return [dict(run.data.tags) for run in runs]


@dataclass(frozen=True)
class Rollout:
    """What a deploy step needs: the registry, the replicas, the checks and how to fetch golden rows."""

    client: MlflowClient
    settings: Settings
    replicas: Sequence[Replica]
    checks: DeployChecks
    golden: Callable[[str], dict[str, Any]]
    on_record: Callable[[DeploymentRecord], None] = lambda entry: print(entry.summary())

    def _verify(self, version: str) -> list[CheckResult]:
        return verify(self.replicas, self.settings.model_name, version, self.golden(version), self.checks)

    def _move(self, version: str, expected: str | None) -> str | None:
        try:
            return move_alias(self.client, self.settings.model_name, CHAMPION, version, expected)
        except PromotionSupersededError as exc:
            raise DeploymentSupersededError(str(exc)) from exc

    def deploy(
        self, version: str, triggered_by: str, expected_champion: str | None = ANY
    ) -> DeploymentRecord:
        """Check that every replica serves ``version``; if any check fails, roll back and raise.

        ``expected_champion``: move the alias only if it points there (a pipeline passes its own version:
        if another run promoted meanwhile, DeploymentSupersededError and the alias stays).
        """
        name = self.settings.model_name
        past = history(self.client, name)
        previous = next((v for v in reversed(past) if v != version), None)
        started = now()
        self._move(version, expected_champion)
        results = self._verify(version)
        checked_at = time.monotonic()
        entry = DeploymentRecord(
            "deploy",
            name,
            previous,
            version,
            triggered_by,
            started,
            now(),
            all(r.passed for r in results),
            results,
        )
        record(self.client, self.settings, entry)
        self.on_record(entry)
        if entry.passed:
            _mark_live(self.client, name, version, f"deployed by {triggered_by} at {entry.finished_at}")
            return entry
        failed = "; ".join(c.line() for c in entry.failed_checks)
        self.client.set_model_version_tag(name, version, Tag.DEPLOYMENT_STATUS, "rolled_back")
        self.client.set_model_version_tag(name, version, Tag.DEPLOYMENT_REASON, failed[:4900])
        if previous is None:
            raise DeploymentFailedError(
                f"v{version} failed its post-deploy checks ({failed}) and there is no earlier live version "
                "to roll back to: the service is left as it is"
            )
        back = self.rollback(
            previous, f"automatic rollback of v{version}", failed_version=version, failed_at=checked_at
        )
        raise DeploymentFailedError(
            f"v{version} failed its post-deploy checks ({failed}); rolled back to v{previous}, which serves "
            f"and passes its checks again {back.restore_s:.1f}s after the alias moved"
        )

    def rollback(
        self,
        to_version: str,
        triggered_by: str,
        failed_version: str | None = None,
        failed_at: float | None = None,
    ) -> DeploymentRecord:
        """Move ``champion`` to ``to_version``, wait for every replica to serve it, and check it.

        ``restore_s`` is the time from the failed check (or from now) until every replica serves
        ``to_version`` again.
        """
        name = self.settings.model_name
        current = failed_version or alias_version(self.client, name, CHAMPION)
        started = now()
        since = failed_at if failed_at is not None else time.monotonic()
        self._move(to_version, current)  # only from what failed (or was live): never over a newer move
        moved_s = time.monotonic() - since
        results = self._verify(to_version)
        passed = all(r.passed for r in results)
        serving_s = max((r.seconds or 0.0 for r in results if r.name == "version"), default=0.0)
        restore_s = moved_s + serving_s
        entry = DeploymentRecord(
            "rollback", name, current, to_version, triggered_by, started, now(), passed, results,
            restore_s=restore_s if passed else None,
        )  # fmt: skip
        record(self.client, self.settings, entry)
        self.on_record(entry)
        if not passed:
            raise DeploymentFailedError(
                f"ROLLBACK FAILED: v{to_version} does not pass its checks either ("
                + "; ".join(c.line() for c in entry.failed_checks)
                + f"); champion stays on v{to_version}; investigate the replicas now"
            )
        _mark_live(self.client, name, to_version, f"rolled back to by {triggered_by} at {entry.finished_at}")
        return entry

    def previous_live(self) -> str:
        """The version live before the current one: what 'roll back' means without a named version."""
        past = history(self.client, self.settings.model_name)
        current = alias_version(self.client, self.settings.model_name, CHAMPION)
        earlier = [v for v in past if v != current]
        if not earlier:
            raise DeploymentFailedError(
                f"no earlier live version of {self.settings.model_name} to roll back to"
            )
        return earlier[-1]
