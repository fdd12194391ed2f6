"""Convert the registered version to ONNX, check parity, and log the ONNX model to the same run."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import mlflow.onnx
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

from flows.train import pinned_requirements
from models.convert import ConversionError, ParityReport, check_parity, onnx_feeds, to_onnx
from models.datasets import Split, records
from models.registry import GOLDEN_ARTIFACT, ONNX_ARTIFACT_NAME, Tag
from models.runtime import LatencyReport, make_session, single_row_latency

GOLDEN_ROWS = 8


@dataclass(frozen=True)
class ConvertResult:
    onnx_uri: str | None
    parity: ParityReport | None
    error: str | None
    size_bytes: int
    latency: LatencyReport | None = None

    @property
    def converted(self) -> bool:
        return self.onnx_uri is not None


def golden_payload(pipeline: Pipeline, split: Split, rows: int = GOLDEN_ROWS) -> dict[str, object]:
    """Held-out rows and the expected outputs: the serving self-test and the post-deploy check."""
    sample = split.x_holdout.head(rows)
    payload: dict[str, object] = {"records": records(sample, split.spec)}
    if split.spec.task == "classification":
        payload["labels"] = [v.item() for v in pipeline.predict(sample)]
        payload["probabilities"] = pipeline.predict_proba(sample).tolist()
    else:
        payload["values"] = pipeline.predict(sample).tolist()
    return payload


def convert_version(
    client: MlflowClient,
    pipeline: Pipeline,
    split: Split,
    *,
    model_name: str,
    version: str,
    run_id: str,
    tolerance: float,
) -> ConvertResult:
    metadata = {"model_name": model_name, "model_version": version, "run_id": run_id}
    try:
        model = to_onnx(pipeline, split.spec, metadata)
    except ConversionError as exc:
        client.set_model_version_tag(model_name, version, Tag.ONNX_PARITY, "not converted")
        return ConvertResult(onnx_uri=None, parity=None, error=str(exc), size_bytes=0)
    parity = check_parity(pipeline, model, split.holdout, split.spec, tolerance)
    latency = single_row_latency(
        make_session(model.SerializeToString()), onnx_feeds(split.holdout, split.spec)
    )
    example = split.holdout.head(3)
    signature = infer_signature(
        onnx_feeds(example, split.spec),
        pipeline.predict_proba(example[split.spec.feature_names])
        if split.spec.task == "classification"
        else pipeline.predict(example[split.spec.feature_names]),
    )
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            model,
            name=ONNX_ARTIFACT_NAME,
            signature=signature,
            save_as_external_data=False,
            pip_requirements=pinned_requirements("onnx", "onnxruntime"),
        )
        mlflow.log_dict(golden_payload(pipeline, split), GOLDEN_ARTIFACT)
        mlflow.log_metrics(
            {
                "onnx_parity_max_abs_diff": parity.max_abs_diff,
                "onnx_latency_p50_ms": latency.p50_ms,
                "onnx_latency_p99_ms": latency.p99_ms,
                "onnx_latency_wall_p99_ms": latency.wall_p99_ms,
            }
        )
    golden_uri = f"runs:/{run_id}/{GOLDEN_ARTIFACT}"
    for key, value in {
        Tag.ONNX_URI: info.model_uri,
        Tag.ONNX_PARITY: "passed" if parity.passed else "failed",
        Tag.ONNX_PARITY_MAX_DIFF: f"{parity.max_abs_diff:.3g}",
        Tag.GOLDEN_URI: golden_uri,
    }.items():
        client.set_model_version_tag(model_name, version, key, value)
    return ConvertResult(
        onnx_uri=info.model_uri,
        parity=parity,
        error=None,
        size_bytes=len(model.SerializeToString()),
        latency=latency,
    )
