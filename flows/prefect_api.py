"""One way to talk to a Prefect server outside a flow run: Prefect's own client, and the few calls we make.

The local stack, the fault benchmark and the integration tests create runs of deployments, wait for them,
and read work pools, workers and schedules. They all go through ``client(api_url)``, Prefect's
``SyncPrefectClient`` (which retries a busy SQLite server's 503 and dropped connections by itself), and
the helpers below, instead of hand-written REST calls.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound

FINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


@contextmanager
def client(api_url: str) -> Iterator[SyncPrefectClient]:
    """Prefect's client for the server at ``api_url`` (``http://host:port/api``), whatever settings say."""
    with SyncPrefectClient(api_url) as prefect:
        yield prefect


def work_pool_exists(prefect: SyncPrefectClient, name: str) -> bool:
    try:
        prefect.read_work_pool(name)
    except ObjectNotFound:
        return False
    return True


def deployments_named(prefect: SyncPrefectClient, names: Iterable[str]) -> dict[str, UUID]:
    """Deployment name -> id, for the names the server has (a deployment name, not ``flow/name``)."""
    found = prefect.read_deployments(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=list(names)))
    )
    return {deployment.name: deployment.id for deployment in found}


def deployment_id(prefect: SyncPrefectClient, name: str) -> UUID:
    found = deployments_named(prefect, [name])
    if name not in found:
        raise LookupError(f"the Prefect server has no deployment named {name!r}")
    return found[name]


def create_run(prefect: SyncPrefectClient, deployment: str | UUID, parameters: dict[str, Any]) -> str:
    """A run of the deployment (by name or id), as the UI's "Run" button makes one; its id."""
    target = deployment if isinstance(deployment, UUID) else deployment_id(prefect, deployment)
    return str(prefect.create_flow_run_from_deployment(target, parameters=parameters).id)


def run_state(prefect: SyncPrefectClient, run_id: str) -> str:
    """The run's state type (``COMPLETED``, ``PAUSED``, ...), ``NONE`` before it has one."""
    state = prefect.read_flow_run(UUID(run_id)).state
    return state.type.value if state is not None else "NONE"


def wait_run(
    prefect: SyncPrefectClient, run_id: str, until: Iterable[str] = FINAL, timeout_s: float = 180
) -> FlowRun | None:
    """The run once its state is one of ``until``; None if it is not within ``timeout_s``."""
    wanted, deadline = set(until), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = prefect.read_flow_run(UUID(run_id))
        if run.state is not None and run.state.type.value in wanted:
            return run
        time.sleep(1)
    return None


def worker_seen_since(prefect: SyncPrefectClient, pool: str, worker: str, since: datetime) -> bool:
    """Whether the server has a heartbeat from ``worker`` of ``pool`` at or after ``since``."""
    for seen in prefect.read_workers_for_work_pool(pool):
        if seen.name == worker and seen.last_heartbeat_time and seen.last_heartbeat_time >= since:
            return True
    return False


def scheduled_starts(prefect: SyncPrefectClient, deployment: UUID) -> list[datetime]:
    """Expected start times of the deployment's scheduled runs."""
    runs = prefect.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        )
    )
    return [run.expected_start_time for run in runs if run.expected_start_time is not None]
