"""The BentoML service: serves the registry's ``champion`` through onnxruntime, with provenance."""

from __future__ import annotations

import uuid
from typing import Any

import bentoml
from bentoml.exceptions import InvalidArgument
from fastapi import FastAPI, HTTPException

from models.features import InputError
from models.settings import Settings
from serving.model import LoadedModel, load_alias

v2 = FastAPI(title="Open Inference Protocol (v2)")


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    return {
        "name": model.ref.name,
        "versions": [model.ref.version],
        "platform": "onnx",
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": [-1, 1]} for t in model.inputs],
        "outputs": [
            {"name": o.name, "datatype": _datatype(o.type), "shape": [-1, *(o.shape[1:] or [])]}
            for o in model.session.get_outputs()
        ],
        "parameters": {"run_id": model.ref.run_id, "model_uri": model.ref.onnx_uri},
    }


def _datatype(onnx_type: str) -> str:
    from models.features import ONNX_TO_DATATYPE

    return ONNX_TO_DATATYPE.get(onnx_type, onnx_type)


@bentoml.service(name="mlops_model", traffic={"timeout": 30})
@bentoml.asgi_app(v2, path="/v2")
class ModelService:
    def __init__(self) -> None:
        settings = Settings()
        self.model: LoadedModel = load_alias(
            settings.resolved_tracking_uri, settings.model_name, settings.model_cache_dir
        )

    @v2.get("/models/{name}")
    def metadata(self, name: str) -> dict[str, Any]:
        if name != self.model.ref.name:
            raise HTTPException(404, f"model {name!r} is not served here; serving {self.model.ref.name!r}")
        return model_metadata(self.model)

    @bentoml.api
    async def predict(self, records: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
        """Predict for one record or a list of records of named features."""
        model = self.model
        rows = [records] if isinstance(records, dict) else records
        try:
            predictions = model.predict(rows)
        except InputError as exc:
            raise InvalidArgument(str(exc)) from exc
        return {
            "request_id": uuid.uuid4().hex,
            "model_name": model.ref.name,
            "model_version": model.ref.version,
            "run_id": model.ref.run_id,
            "predictions": predictions,
        }
