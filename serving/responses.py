"""How the inference routes answer: provenance headers, OIP bodies (JSON or binary tensors), ``/predict``
bodies, and the status of each refusal. Shared by the FastAPI routes and the fast path, which therefore
cannot answer differently."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from models.inference_records import PROBE_HEADER
from serving import dataplane
from serving.dataplane import (
    DataPlane,
    DataPlaneError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    RecordNotWritten,
    VersionConflict,
)
from serving.feedback import LabelConflict, TooManyLabels, UnknownRequest
from serving.model import LoadedModel
from serving.protocol import BINARY_HEADER, binary_output_tensor, output_tensor

JSON = "application/json"
_DUMP = orjson.OPT_SERIALIZE_NUMPY
STATUS = {
    InvalidInput: 400,
    ModelNotFound: 404,
    VersionConflict: 409,
    ModelNotReady: 503,
    RecordNotWritten: 503,
    LabelConflict: 409,
    TooManyLabels: 413,
    UnknownRequest: 422,
}
__all__ = ["PROBE_HEADER", "Response", "infer", "json_response", "predict", "provenance_headers", "refused"]


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=_DUMP), status_code=status, media_type=JSON, headers=headers)


def refused(exc: DataPlaneError) -> Response:
    """A domain error as its status (the error edge adds the request id and records it)."""
    return json_response({"error": str(exc)}, STATUS.get(type(exc), 400))


def provenance_headers(answer: dataplane.Answer) -> dict[str, str]:
    ref = answer.model.ref
    return {"x-request-id": answer.request_id, "x-model-version": ref.version, "x-run-id": ref.run_id}


def infer_response(answer: dataplane.Inferred) -> Response:
    """JSON, or when some output is asked for as binary (``binary_data_output`` for all, or an output's own
    ``binary_data``) the JSON part followed by those outputs' bytes."""
    ref = answer.model.ref
    body: dict[str, Any] = {
        "model_name": ref.name,
        "model_version": ref.version,
        "parameters": {"run_id": ref.run_id, "request_id": answer.request_id, "logged": answer.logged},
    }
    if answer.id is not None:
        body["id"] = answer.id
    headers = provenance_headers(answer)
    chosen = answer.chosen()
    if not any(name in answer.binary for name, _ in chosen):
        outputs = [output_tensor(n, o) for n, o in chosen]
        return json_response({**body, "outputs": outputs}, headers=headers)
    # Outputs asked for as binary carry their size and follow the JSON, in order; the others stay JSON.
    tensors = [
        binary_output_tensor(n, o) if n in answer.binary else (output_tensor(n, o), b"") for n, o in chosen
    ]
    head = orjson.dumps({**body, "outputs": [header for header, _ in tensors]}, option=_DUMP)
    return Response(
        b"".join([head, *(data for _, data in tensors)]),
        media_type="application/octet-stream",
        headers={**headers, BINARY_HEADER: str(len(head))},
    )


async def predict(
    plane: DataPlane,
    body: bytes,
    probe: bool,
    request_id: str | None = None,
    model: LoadedModel | None = None,
    key: str | None = None,
) -> Response:
    """``{"records": {...}}`` or ``{"records": [{...}, ...]}``: one model call for the whole request (the
    default model's, for routing key ``key``, or ``model``'s)."""
    answer, predictions = await plane.predict(body, probe, request_id, model, key)
    ref = answer.model.ref
    payload = {
        "request_id": answer.request_id,
        "model_name": ref.name,
        "model_version": ref.version,
        "run_id": ref.run_id,
        "logged": answer.logged,
        "predictions": predictions,
    }
    return json_response(payload, headers=provenance_headers(answer))


async def infer(
    plane: DataPlane,
    name: str,
    version: str | None,
    body: bytes,
    binary_header: str | None,
    probe: bool,
    request_id: str | None = None,
    key: str | None = None,
) -> Response:
    return infer_response(await plane.infer(name, version, body, binary_header, probe, request_id, key))
