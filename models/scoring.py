"""A model's ONNX session described and its outputs decoded, the same way online and in batch.

NumPy and onnxruntime only: the serving process and a batch worker both use this without scikit-learn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.features import ONNX_TO_DATATYPE, TensorSpec
from models.runtime import make_session


def describe(
    session: ort.InferenceSession,
) -> tuple[tuple[TensorSpec, ...], tuple[str, ...], tuple[Any, ...] | None]:
    """The model's inputs, its outputs' names, and its classes (None for a regressor)."""
    inputs = tuple(TensorSpec(i.name, ONNX_TO_DATATYPE[i.type]) for i in session.get_inputs())
    props = session.get_modelmeta().custom_metadata_map
    classes = tuple(json.loads(props["classes"])) if "classes" in props else None
    return inputs, tuple(o.name for o in session.get_outputs()), classes


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def predictions(outputs: Sequence[np.ndarray], classes: tuple[Any, ...] | None) -> list[dict[str, Any]]:
    """Outputs as one JSON-ready prediction per row: ``{"value"}``, or ``{"label", "probabilities"}``."""
    if classes is None:
        return [{"value": float(v)} for v in np.asarray(outputs[0]).ravel()]
    labels, probabilities = outputs[0].ravel(), outputs[1]
    keys = [str(c) for c in classes]
    return [
        {"label": _plain(label), "probabilities": dict(zip(keys, row.tolist(), strict=True))}
        for label, row in zip(labels, probabilities, strict=True)
    ]


def output_columns(outputs: Sequence[np.ndarray], classes: tuple[Any, ...] | None) -> dict[str, np.ndarray]:
    """The same outputs as columns: ``value``, or ``label`` and one ``probability_<class>`` per class."""
    if classes is None:
        return {"value": np.asarray(outputs[0], dtype=np.float64).ravel()}
    probabilities = np.asarray(outputs[1], dtype=np.float64)
    return {
        "label": np.asarray(outputs[0]).ravel(),
        **{f"probability_{c}": probabilities[:, i] for i, c in enumerate(classes)},
    }


@dataclass(frozen=True)
class OnnxModel:
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    classes: tuple[Any, ...] | None

    @classmethod
    def load(cls, model: bytes | Path, arena: bool = True) -> OnnxModel:
        session = make_session(model, arena)
        return cls(session, *describe(session))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        outputs: list[np.ndarray] = self.session.run(None, dict(feeds))
        return outputs
