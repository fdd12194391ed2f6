"""The served model: resolve the registry alias, fetch the ONNX file, run it with onnxruntime.

Imports only NumPy, onnxruntime and the MLflow client: the serving process never loads scikit-learn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.features import ONNX_TO_DATATYPE, TensorSpec, feeds_from_records
from models.registry import CHAMPION, Tag
from models.runtime import make_session


class ModelUnavailableError(RuntimeError):
    """No version can be served: the alias is missing or its ONNX artifact cannot be fetched."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    run_id: str
    onnx_uri: str
    artifact_uri: str


def resolve(tracking_uri: str, model_name: str, alias: str = CHAMPION) -> ModelRef:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        raise ModelUnavailableError(f"{model_name}@{alias}: {exc.message}") from exc
    onnx_uri = version.tags.get(Tag.ONNX_URI)
    if not onnx_uri:
        raise ModelUnavailableError(
            f"{model_name} version {version.version} has no ONNX model ({Tag.ONNX_URI})"
        )
    try:
        # Resolve models:/<id> with this client: MLflow's own resolution uses the global registry URI.
        location = client.get_logged_model(onnx_uri.removeprefix("models:/")).artifact_location
    except MlflowException as exc:
        raise ModelUnavailableError(f"{onnx_uri} (version {version.version}): {exc.message}") from exc
    return ModelRef(
        name=model_name,
        version=str(version.version),
        run_id=str(version.run_id),
        onnx_uri=onnx_uri,
        artifact_uri=location,
    )


def fetch(ref: ModelRef, cache_dir: Path) -> Path:
    """Download the version's ONNX model once into the cache; return the ``.onnx`` file."""
    import mlflow.artifacts

    target = cache_dir / ref.name / ref.version
    if not any(target.rglob("*.onnx")):
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=ref.artifact_uri, dst_path=str(target))
    found = sorted(target.rglob("*.onnx"))
    if not found:
        raise ModelUnavailableError(f"{ref.onnx_uri} (version {ref.version}) holds no .onnx file")
    return found[0]


@dataclass(frozen=True)
class LoadedModel:
    ref: ModelRef
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    classes: tuple[Any, ...] | None

    @classmethod
    def load(cls, ref: ModelRef, model_file: Path) -> LoadedModel:
        session = make_session(model_file)
        inputs = tuple(TensorSpec(i.name, ONNX_TO_DATATYPE[i.type]) for i in session.get_inputs())
        props = session.get_modelmeta().custom_metadata_map
        classes = tuple(json.loads(props["classes"])) if "classes" in props else None
        return cls(ref=ref, session=session, inputs=inputs, classes=classes)

    def predict(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        outputs = self.session.run(None, feeds_from_records(records, self.inputs))
        if self.classes is None:
            return [{"value": float(v)} for v in np.asarray(outputs[0]).ravel()]
        labels, probabilities = outputs[0].ravel(), outputs[1]
        return [
            {
                "label": label.item() if isinstance(label, np.generic) else label,
                "probabilities": {str(c): float(p) for c, p in zip(self.classes, row, strict=True)},
            }
            for label, row in zip(labels, probabilities, strict=True)
        ]


def load_alias(tracking_uri: str, model_name: str, cache_dir: Path, alias: str = CHAMPION) -> LoadedModel:
    ref = resolve(tracking_uri, model_name, alias)
    return LoadedModel.load(ref, fetch(ref, cache_dir))
