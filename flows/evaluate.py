"""Score the current champion on the candidate's held-out rows, so both are judged on the same data."""

from __future__ import annotations

import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.gate import ChampionScores
from models.datasets import Split
from models.metrics import evaluate
from models.registry import CHAMPION


def score_champion(client: MlflowClient, model_name: str, split: Split) -> ChampionScores | None:
    """None when there is no champion yet; otherwise its metrics on ``split.holdout``, or why not."""
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    try:
        model = mlflow.sklearn.load_model(version.source)
        metrics = evaluate(model, split.x_holdout, split.y_holdout, split.spec.task)
    except Exception as exc:  # noqa: BLE001 - any failure means the two cannot be compared
        reason = f"cannot score v{version.version} on these rows: {type(exc).__name__}: {exc}"
        return ChampionScores(version=str(version.version), metrics={}, error=reason[:300])
    return ChampionScores(version=str(version.version), metrics=metrics)
