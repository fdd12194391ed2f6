"""Metrics fitting each task, computed from a fitted model on held-out rows."""

from __future__ import annotations

import pandas as pd
from sklearn import metrics
from sklearn.pipeline import Pipeline

from models.datasets import Task

HIGHER_IS_BETTER = frozenset({"accuracy", "f1", "roc_auc", "r2"})
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
TASK_METRICS: dict[Task, frozenset[str]] = {
    "classification": frozenset({"accuracy", "f1", "roc_auc", "log_loss"}),
    "regression": frozenset({"rmse", "mae", "r2"}),
}


def evaluate(model: Pipeline, x: pd.DataFrame, y: pd.Series, task: Task) -> dict[str, float]:
    if task == "classification":
        predicted = model.predict(x)
        proba = model.predict_proba(x)
        scores = {
            "accuracy": metrics.accuracy_score(y, predicted),
            "f1": metrics.f1_score(y, predicted, average="macro"),
            "log_loss": metrics.log_loss(y, proba, labels=model.classes_),
        }
        if proba.shape[1] == 2:
            scores["roc_auc"] = metrics.roc_auc_score(y, proba[:, 1])
        return {k: float(v) for k, v in scores.items()}
    predicted = model.predict(x)
    return {
        "rmse": float(metrics.root_mean_squared_error(y, predicted)),
        "mae": float(metrics.mean_absolute_error(y, predicted)),
        "r2": float(metrics.r2_score(y, predicted)),
    }
