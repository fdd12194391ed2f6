"""Register a trained model as a new version, tagged with its lineage; take over one an abandoned run left."""

from __future__ import annotations

import hashlib
from uuid import UUID

from mlflow import MlflowClient

from flows.train import TrainResult
from models.registry import Tag


def lineage_tags(
    train: TrainResult,
    *,
    recipe: str,
    data_source: str,
    data_digest: str,
    rows: int,
    validation: str,
    git_commit: str,
) -> dict[str, str]:
    return {
        Tag.RUN_ID: train.run_id,
        Tag.RECIPE: recipe,
        Tag.DATA_SOURCE: data_source,
        Tag.DATA_DIGEST: data_digest,
        Tag.DATA_ROWS: str(rows),
        Tag.DATA_VALIDATION: validation,
        Tag.GIT_COMMIT: git_commit,
    }


def register(client: MlflowClient, model_name: str, train: TrainResult, tags: dict[str, str]) -> str:
    """Create the registered model if needed and add a version for this run's model."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(
            model_name, description="Registered by the training pipeline; see version tags for lineage."
        )
    version = client.create_model_version(
        model_name,
        source=train.model_uri,
        run_id=train.run_id,
        tags=tags,
        model_id=train.model_id,
        description=f"Trained by run {train.run_id}.",
    )
    return str(version.version)


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
