"""Train a recipe on the split and track everything about it in one MLflow run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

from models.datasets import DEMO_PREFIX, Split, digest
from models.metrics import evaluate
from models.profile import build_profile
from models.recipes import SKOPS_TRUSTED_TYPES, build_pipeline
from models.registry import PROFILE_ARTIFACT, SKLEARN_ARTIFACT_NAME, VALIDATION_ARTIFACT, Tag


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_id: str
    model_uri: str
    metrics: dict[str, float]


def pinned_requirements(*distributions: str) -> list[str]:
    """Exact pins of the installed distributions (spares MLflow inferring them, which is slow)."""
    return [f"{name}=={metadata.version(name)}" for name in distributions]


def dataset_source(source: str) -> str | DatasetSource:
    """MLflow's record of where the data came from: the file path, or the bundled loader's name."""
    if source.startswith(DEMO_PREFIX):
        return CodeDatasetSource(tags={"loader": "sklearn.datasets", "dataset": source})
    return str(Path(source).resolve())


def fit(split: Split, recipe: str) -> Pipeline:
    pipeline = build_pipeline(recipe, split.spec)
    pipeline.fit(split.x_train, split.y_train)
    return pipeline


def track_training(
    pipeline: Pipeline,
    split: Split,
    *,
    recipe: str,
    experiment_id: str,
    data_source: str,
    data_digest: str,
    validation: str,
    git_commit: str,
    fit_seconds: float | None = None,
    validation_report: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Log params, metrics, the dataset, provenance and the model with its signature in one run."""
    spec = split.spec
    metrics = evaluate(pipeline, split.x_holdout, split.y_holdout, spec.task)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{recipe}") as run:
        mlflow.set_tags(
            {
                "mlflow.source.git.commit": git_commit,
                Tag.GIT_COMMIT: git_commit,
                Tag.RECIPE: recipe,
                Tag.DATA_SOURCE: data_source,
                Tag.DATA_DIGEST: data_digest,
                Tag.DATA_VALIDATION: validation,
            }
        )
        estimator = pipeline.steps[-1][1]
        mlflow.log_params(
            {
                "recipe": recipe,
                "dataset": spec.name,
                "estimator": type(estimator).__name__,
                "train_rows": len(split.train),
                "holdout_rows": len(split.holdout),
                **{f"model.{k}": v for k, v in estimator.get_params().items()},
            }
        )
        for frame, context in ((split.train, "training"), (split.holdout, "holdout")):
            # one digest vocabulary: the run's datasets carry the digest of their split, as
            # data.digest on the version is the digest (models/datasets.py) of the whole validated table
            dataset = from_pandas(
                frame,
                source=dataset_source(data_source),
                name=f"{spec.name}-{data_digest}",
                targets=spec.target,
                digest=digest(frame),
            )
            mlflow.log_input(dataset, context=context)
        if validation_report is not None:  # every expectation and what was observed, for mlops trace
            mlflow.log_dict(dict(validation_report), VALIDATION_ARTIFACT)
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
        if fit_seconds is not None:
            mlflow.log_metric("fit_seconds", fit_seconds)
        example = split.x_holdout.head(3)
        output = (
            pipeline.predict_proba(example) if spec.task == "classification" else pipeline.predict(example)
        )
        mlflow.log_dict(build_profile(split.x_train, spec, pipeline.predict(split.x_train)), PROFILE_ARTIFACT)
        info = mlflow.sklearn.log_model(
            pipeline,
            name=SKLEARN_ARTIFACT_NAME,
            signature=infer_signature(example, output),
            input_example=example,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=pinned_requirements("scikit-learn", "skops", "numpy", "pandas"),
        )
    return TrainResult(
        run_id=run.info.run_id, model_id=info.model_id, model_uri=info.model_uri, metrics=metrics
    )
