"""The served model: resolve the registry alias, fetch the ONNX file, run it with onnxruntime.

Imports only NumPy and onnxruntime: the registry is read without MLflow where the store allows
(``serving/registry.py``), and the serving process never loads scikit-learn.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models import scoring
from models.features import TensorSpec, feeds_from_records
from models.registry import CHAMPION, GOLDEN_ARTIFACT, Tag
from models.runtime import make_session
from models.settings import redact
from serving import registry
from serving.registry import AliasedVersion, Reader, RegistryReadError


class ModelUnavailableError(RuntimeError):
    """No version can be served: the alias is missing or its artifacts cannot be fetched."""


class NotRegisteredError(ModelUnavailableError):
    """The registry answered that the model, version or alias does not exist (it is not an outage)."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    run_id: str
    onnx_uri: str
    artifact_uri: str  # where the ONNX model's files are
    golden_uri: str  # the golden rows recorded at gate time


def _registry_error(what: str, exc: Exception) -> ModelUnavailableError:
    """Messages may name the URI that was called, credentials included: they are taken out."""
    missing = isinstance(exc, registry.NotRegisteredError)
    return (NotRegisteredError if missing else ModelUnavailableError)(redact(f"{what}: {exc}"))


def alias_version(tracking_uri: str, model_name: str, alias: str = CHAMPION) -> str:
    """Only the version the alias points at: one registry read (a third of ``resolve``'s)."""
    try:
        return registry.reader(tracking_uri).alias_version(model_name, alias)
    except RegistryReadError as exc:
        raise _registry_error(f"{model_name}@{alias}", exc) from exc


def resolve(tracking_uri: str, model_name: str, alias: str = CHAMPION) -> ModelRef:
    """What ``models:/<name>@<alias>`` is now, read from exactly this store (``serving/registry.py``)."""
    try:
        store = registry.reader(tracking_uri)
        return _ref(store, model_name, store.aliased(model_name, alias))
    except RegistryReadError as exc:  # nothing to load
        raise _registry_error(f"{model_name}@{alias}", exc) from exc


def with_alias(tracking_uri: str, alias: str = CHAMPION) -> list[str]:
    """The registered models that have ``alias`` now, by name."""
    try:
        return registry.reader(tracking_uri).with_alias(alias)
    except RegistryReadError as exc:
        raise _registry_error(f"models with @{alias}", exc) from exc


def model_tags(tracking_uri: str, model_name: str) -> dict[str, str]:
    """The tags on the registered model itself (the traffic shares among them)."""
    try:
        return registry.reader(tracking_uri).model_tags(model_name)
    except RegistryReadError as exc:
        raise _registry_error(f"{model_name} tags", exc) from exc


def resolve_version(tracking_uri: str, model_name: str, version: str) -> tuple[ModelRef, dict[str, str]]:
    """``models:/<name>/<version>`` and its tags (the gate's verdict among them)."""
    try:
        store = registry.reader(tracking_uri)
        found = store.version(model_name, version)
        return _ref(store, model_name, found), found.tags
    except RegistryReadError as exc:
        raise _registry_error(f"{model_name}/{version}", exc) from exc


def _ref(store: Reader, model_name: str, found: AliasedVersion) -> ModelRef:
    onnx_uri = found.tags.get(Tag.ONNX_URI)
    if not onnx_uri:
        raise ModelUnavailableError(
            f"{model_name} version {found.version} has no ONNX model ({Tag.ONNX_URI})"
        )
    location = store.model_location(onnx_uri.removeprefix("models:/"))
    run_artifacts = store.run_artifact_uri(found.run_id)
    return ModelRef(
        name=model_name,
        version=found.version,
        run_id=found.run_id,
        onnx_uri=onnx_uri,
        artifact_uri=location,
        golden_uri=f"{run_artifacts.rstrip('/')}/{GOLDEN_ARTIFACT}",
    )


def _download(artifact_uri: str, target: Path) -> None:
    try:
        registry.download(artifact_uri, target)
    except RegistryReadError as exc:
        raise ModelUnavailableError(str(exc)) from exc


def cache_once(artifact_uri: str, target: Path, complete: Callable[[Path], bool]) -> Path:
    """The folder ``target`` holding the artifact, downloaded once for every process sharing the cache.

    The workers of one service share the cache and may fetch the same version at the same moment: each
    downloads into a partial folder of its own and renames it into place, so ``target`` exists only when
    complete and no process reads a file another is still writing. The first rename wins; the others'
    copies are discarded. A folder that is not ``complete`` (left by a release that downloaded in place)
    is moved aside and fetched again.
    """
    if target.is_dir():
        if complete(target):
            return target
        with contextlib.suppress(OSError):  # another process may have moved it first
            target.rename(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}-stale-*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-partial-", dir=target.parent))
    try:
        _download(artifact_uri, partial)
        try:
            partial.rename(target)
        except OSError:
            if not target.is_dir():  # not another process's complete copy: a real failure
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def fetch(ref: ModelRef, cache_dir: Path) -> Path:
    """Download the version's ONNX model once into the cache; return the ``.onnx`` file."""
    target = cache_once(
        ref.artifact_uri, cache_dir / ref.name / ref.version / "onnx", lambda f: any(f.rglob("*.onnx"))
    )
    found = sorted(target.rglob("*.onnx"))
    if not found:
        raise ModelUnavailableError(f"{ref.onnx_uri} (version {ref.version}) holds no .onnx file")
    return found[0]


def fetch_golden(ref: ModelRef, cache_dir: Path) -> dict[str, Any]:
    name = Path(GOLDEN_ARTIFACT).name
    target = cache_once(
        ref.golden_uri, cache_dir / ref.name / ref.version / "golden", lambda f: (f / name).is_file()
    )
    golden: dict[str, Any] = json.loads((target / name).read_text())
    return golden


@dataclass(frozen=True)
class LoadedModel:
    ref: ModelRef
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    classes: tuple[Any, ...] | None

    @classmethod
    def load(cls, ref: ModelRef, model_file: Path) -> LoadedModel:
        session = make_session(model_file)
        inputs, outputs, classes = scoring.describe(session)
        return cls(ref=ref, session=session, inputs=inputs, output_names=outputs, classes=classes)

    def feeds(self, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        return feeds_from_records(records, self.inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        outputs: list[np.ndarray] = self.session.run(None, dict(feeds))
        return outputs

    def predictions(self, outputs: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Outputs as one JSON-ready prediction per row."""
        return scoring.predictions(outputs, self.classes)

    def predict(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return self.predictions(self.run(self.feeds(records)))


def load_alias(tracking_uri: str, model_name: str, cache_dir: Path, alias: str = CHAMPION) -> LoadedModel:
    ref = resolve(tracking_uri, model_name, alias)
    return LoadedModel.load(ref, fetch(ref, cache_dir))
