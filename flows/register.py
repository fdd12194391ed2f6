"""Register a trained model as a new version, tagged with its lineage."""

from __future__ import annotations

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
