"""What the service's OpenAPI document (``/openapi.json``, Swagger UI at ``/docs``) says of the inference
routes, whose handlers read their body raw (FastAPI cannot infer it): the request bodies and every refusal,
in the shape the error edge gives them."""

from __future__ import annotations

from typing import Any

from models.features import NUMPY_DTYPES

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "request_id"],
    "properties": {
        "error": {"type": "string", "description": "<field>: <what was expected>"},
        "request_id": {"type": "string", "description": "the client's x-request-id when it sent one"},
    },
}


def _refusal(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


REFUSALS: dict[int | str, dict[str, Any]] = {
    400: _refusal("Bad input: malformed JSON, missing or unknown features, wrong types or shapes, NaN"),
    401: _refusal("Missing or wrong API key (when MLOPS_API_KEY is set)"),
    404: _refusal("No such model or version served here"),
    413: _refusal("Body over MLOPS_MAX_REQUEST_BYTES"),
    415: _refusal("Not a JSON body: another content type, or a content encoding"),
    503: _refusal("No model loaded and self-tested yet"),
}

_VALUE = {"oneOf": [{"type": "number"}, {"type": "string"}]}
_RECORD = {"type": "object", "additionalProperties": _VALUE, "description": "one row: {feature: value}"}

PREDICT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["records"],
                "properties": {
                    "records": {"oneOf": [_RECORD, {"type": "array", "items": _RECORD, "minItems": 1}]}
                },
            }
        }
    },
}

_LABEL = {
    "type": "object",
    "required": ["request_id", "label"],
    "properties": {
        "request_id": {"type": "string", "description": "the x-request-id of the answer being labelled"},
        "row": {"type": "integer", "minimum": 0, "default": 0},
        "label": {"description": "one of the model's classes (a classifier) or a number (a regressor)"},
    },
}
FEEDBACK_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["labels"],
                "properties": {
                    "labels": {"type": "array", "items": _LABEL, "minItems": 1, "maxItems": 10_000}
                },
            }
        }
    },
}

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 2},
        "datatype": {"type": "string", "enum": sorted(NUMPY_DTYPES)},
        "data": {"type": "array", "description": "row-major values; absent with parameters.binary_data_size"},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}},
    },
}
_OUTPUT = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
    },
}
_INFER = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
        "outputs": {"type": "array", "items": _OUTPUT},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
    },
}
INFER_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": _INFER},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "description": "the binary tensor extension: the JSON part (its length in the "
            "Inference-Header-Content-Length header), then each tensor's raw little-endian bytes",
        },
    },
}
