"""Fault injection: register a version that is broken at serve time, on purpose.

Used by the tests and by a user who wants to watch the service refuse a bad model. The broken version is
a copy of a good one (same run, same lineage, gate passed) whose ONNX artifact is replaced, and it is
tagged ``fault.injected`` so nobody mistakes it for a real candidate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from mlflow import MlflowClient

from flows.tracking import experiment_id
from models.registry import Tag
from models.settings import Settings

FaultKind = Literal["unloadable"]
FAULT_TAG = "fault.injected"


def broken_onnx(kind: FaultKind) -> bytes:
    if kind == "unloadable":
        return b"this is not an ONNX protobuf"
    raise ValueError(f"unknown fault {kind!r}")


def register_broken_version(
    client: MlflowClient, settings: Settings, base_version: str, kind: FaultKind
) -> str:
    """A new version of ``settings.model_name`` that looks like ``base_version`` but breaks at serve time."""
    base = client.get_model_version(settings.model_name, base_version)
    model = client.create_logged_model(
        experiment_id(client, settings), name=f"onnx-fault-{kind}", source_run_id=base.run_id
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(broken_onnx(kind))
        client.log_model_artifact(model.model_id, str(path))
    client.finalize_logged_model(model.model_id, "READY")
    tags = {**base.tags, Tag.ONNX_URI: f"models:/{model.model_id}", FAULT_TAG: kind}
    version = client.create_model_version(
        settings.model_name,
        source=str(base.source),
        run_id=base.run_id,
        tags=tags,
        description=f"FAULT INJECTED ({kind}) from version {base_version}",
    )
    return str(version.version)
