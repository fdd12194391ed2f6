"""The BentoML service: serves the registry's ``champion`` through onnxruntime, with provenance.

Routes (all JSON; errors are ``{"error": "<field>: <what was expected>"}`` with a 4xx):

* Open Inference Protocol v2: ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
  ``GET /v2/models/{name}[/versions/{version}]``, ``GET .../ready``, ``POST .../infer``.
* ``POST /predict``: ``{"records": {...} | [{...}, ...]}``, named features, one call to the model per request.
* ``POST /predict_rows``: a BentoML batchable API for single-row traffic; concurrent requests are merged
  into one model call (adaptive batching) and each row's answer carries its provenance.
* BentoML's own ``/livez``, ``/readyz`` (false until a model is loaded and self-tested), ``/metrics``.

The service never imports scikit-learn or Prefect.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Annotated, Any

import bentoml
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import AfterValidator, AllowInfNan
from starlette.requests import ClientDisconnect

from models.features import ONNX_TO_DATATYPE, InputError
from models.inference_records import PROBE_HEADER
from models.settings import Settings
from serving import bentoml_fixes, metrics
from serving.follower import Follower
from serving.http import ApiKeyMiddleware, BodyLimitMiddleware, JsonErrorMiddleware
from serving.inference_log import InferenceLog, InferenceLogError
from serving.model import LoadedModel
from serving.protocol import (
    BINARY_HEADER,
    binary_output_tensor,
    output_tensor,
    parse_infer_request,
    split_body,
)

api = FastAPI(title="mlops-path inference", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
SERVER_NAME = "mlops-path"
JSON = "application/json"
_DUMP = orjson.OPT_SERIALIZE_NUMPY
# From this many rows a request's inputs are written out for the inference log while onnxruntime runs
# (it releases the GIL): 1,000 rows x 30 features take 0.6 ms to encode against 2.3 ms of inference.
OVERLAP_ROWS = 64


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=_DUMP), status_code=status, media_type=JSON, headers=headers)


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> Response:
    service = bentoml.get_current_service()
    if service is not None and exc.status != 404:  # refused requests count in the monitored error rate
        current = service.follower.current
        with contextlib.suppress(InferenceLogError):
            service.log.write_error(
                request_id=uuid.uuid4().hex,
                model=current.ref.name if current else "",
                version=current.ref.version if current else "",
                route=request.url.path,
                status=exc.status,
                error=exc.message,
            )
    return json_response({"error": exc.message}, exc.status)


def provenance_headers(model: LoadedModel, request_id: str) -> dict[str, str]:
    return {"x-request-id": request_id, "x-model-version": model.ref.version, "x-run-id": model.ref.run_id}


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    outputs = model.session.get_outputs()
    return {
        "name": model.ref.name,
        "versions": [model.ref.version],
        "platform": "onnx",
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": [-1, 1]} for t in model.inputs],
        "outputs": [
            {"name": o.name, "datatype": _datatype(o.type), "shape": [-1, *(o.shape[1:] or [1])]}
            for o in outputs
        ],
        "parameters": {
            "run_id": model.ref.run_id,
            "model_uri": f"models:/{model.ref.name}/{model.ref.version}",
            "onnx_uri": model.ref.onnx_uri,
            "classes": list(model.classes) if model.classes is not None else None,
        },
    }


def _datatype(onnx_type: str) -> str:
    return ONNX_TO_DATATYPE.get(onnx_type, onnx_type)


def is_probe(request: Request) -> bool:
    return request.headers.get(PROBE_HEADER) == "1"


async def _body(request: Request) -> bytes:
    try:
        return await request.body()
    except ClientDisconnect:
        raise ApiError(400, "body: the client closed the connection before sending all of it") from None


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body: invalid JSON ({exc})") from None


async def _json_body(request: Request) -> Any:
    return _parse_json(await _body(request))


def infer_response(
    body: dict[str, Any], outputs: list[tuple[str, Any]], binary: bool, headers: dict[str, str]
) -> Response:
    """JSON, or with ``binary_data_output`` the JSON part followed by the outputs' bytes."""
    if not binary:
        return json_response({**body, "outputs": [output_tensor(n, o) for n, o in outputs]}, headers=headers)
    tensors = [binary_output_tensor(n, o) for n, o in outputs]
    head = orjson.dumps({**body, "outputs": [header for header, _ in tensors]})
    return Response(
        b"".join([head, *(data for _, data in tensors)]),
        media_type="application/octet-stream",
        headers={**headers, BINARY_HEADER: str(len(head))},
    )


def _checked_against_current_model(rows: list[dict[str, float | str]]) -> list[dict[str, float | str]]:
    """Validate a /predict_rows request on its own, before it is merged into a batch with others."""
    service = bentoml.get_current_service()
    model = service.follower.current if service is not None else None
    if model is None:
        raise ValueError("no model is loaded yet")
    model.feeds(rows)
    return rows


FiniteOrText = Annotated[float, AllowInfNan(False)] | str
Rows = Annotated[list[dict[str, FiniteOrText]], AfterValidator(_checked_against_current_model)]


bentoml_fixes.install()  # before BentoML builds the app from this module: see serving/bentoml_fixes.py


# Access log and tracing are off on the inference routes: every request is already one line of the
# inference log with its own request id, and the per-request span cost a third of the request path.
@bentoml.service(
    name="mlops_model",
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/predict", "/infer$"]},
)
@bentoml.asgi_app(api, path="/")
class ModelService:
    def __init__(self) -> None:
        settings = Settings()
        worker = bentoml.server_context.worker_index or 0
        self.log = InferenceLog(
            settings.inference_log_dir, worker=str(worker), max_bytes=settings.inference_log_max_bytes
        )
        self.follower = Follower(
            tracking_uri=settings.resolved_tracking_uri,
            model_name=settings.model_name,
            cache_dir=settings.model_cache_dir,
            poll_s=settings.swap_poll_s,
            on_event=metrics.alias_event,
        )
        self.follower.start()
        self.inference_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        # Everything loaded so far (modules, BentoML, MLflow) lives as long as the process: out of the
        # collector's way, so that a gen-2 collection only walks what requests create.
        gc.collect()
        gc.freeze()

    async def __is_ready__(self) -> bool:
        return self.follower.ready

    @bentoml.on_shutdown
    def close(self) -> None:
        self.follower.stop()
        self.inference_thread.shutdown(wait=True)
        self.log.close()

    # --- helpers -------------------------------------------------------------------------------------

    def _current(self) -> LoadedModel:
        model = self.follower.current
        if model is None:
            raise ApiError(503, "model: not loaded yet; retry when /v2/health/ready says ready")
        return model

    def _model(self, name: str, version: str | None = None) -> LoadedModel:
        model = self._current()
        if name != model.ref.name:
            raise ApiError(404, f"model: {name!r} is not served here; expected {model.ref.name!r}")
        if version is not None and version != model.ref.version:
            raise ApiError(
                404, f"version: {version!r} is not loaded; this server serves version {model.ref.version}"
            )
        return model

    async def _run(self, model: LoadedModel, feeds: dict[str, Any], rows: int) -> tuple[list[Any], Any]:
        """The model's outputs and the inputs as the log will hold them (encoded during inference)."""
        if rows < OVERLAP_ROWS:
            return model.run(feeds), feeds
        running = asyncio.get_running_loop().run_in_executor(self.inference_thread, model.run, feeds)
        encoded = self.log.encode(feeds)
        return await running, encoded

    def _record(
        self,
        model: LoadedModel,
        route: str,
        request_id: str,
        started: float,
        feeds: Any,
        outputs: Any,
        rows: int,
        probe: bool = False,
    ) -> bool:
        latency_ms = (time.perf_counter() - started) * 1000
        metrics.observe(route, model.ref.version, latency_ms / 1000)
        try:
            self.log.write(
                request_id=request_id,
                model=model.ref.name,
                version=model.ref.version,
                run_id=model.ref.run_id,
                route=route,
                latency_ms=latency_ms,
                inputs=feeds,
                outputs=dict(zip(model.output_names, outputs, strict=True)),
                rows=rows,
                probe=probe,
            )
        except InferenceLogError:
            # Policy: the prediction is still served; the failure is counted (metric and header) so
            # served == logged + failed reconciles afterwards.
            metrics.log_failure()
            return False
        return True

    # --- Open Inference Protocol ---------------------------------------------------------------------

    @api.get("/v2")
    async def server_metadata(self) -> Response:
        return json_response(
            {
                "name": SERVER_NAME,
                "version": metadata.version("mlops-path"),
                "extensions": ["model_repository_metadata"],
            }
        )

    @api.get("/v2/health/live")
    async def live(self) -> Response:
        return json_response({"live": True})

    @api.get("/v2/health/ready")
    async def ready(self) -> Response:
        ready = self.follower.ready
        return json_response({"ready": ready}, 200 if ready else 503)

    @api.get("/v2/models/{name}")
    async def metadata(self, name: str) -> Response:
        return json_response(model_metadata(self._model(name)))

    @api.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(self, name: str, version: str) -> Response:
        return json_response(model_metadata(self._model(name, version)))

    @api.get("/v2/models/{name}/ready")
    async def model_ready(self, name: str) -> Response:
        return json_response({"name": name, "ready": self._model(name) is not None})

    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(self, name: str, version: str) -> Response:
        return json_response(
            {"name": name, "version": version, "ready": self._model(name, version) is not None}
        )

    @api.post("/v2/models/{name}/infer")
    async def infer(self, name: str, request: Request) -> Response:
        return await self._infer(request, name, None)

    @api.post("/v2/models/{name}/versions/{version}/infer")
    async def version_infer(self, name: str, version: str, request: Request) -> Response:
        return await self._infer(request, name, version)

    async def _infer(self, request: Request, name: str, version: str | None) -> Response:
        model = self._model(name, version)
        raw = await _body(request)
        started = time.perf_counter()
        try:
            head, binary = split_body(raw, request.headers.get(BINARY_HEADER))
            parsed = parse_infer_request(_parse_json(head), model.inputs, binary)
        except InputError as exc:
            raise ApiError(400, str(exc)) from None
        unknown = sorted(set(parsed.outputs or ()) - set(model.output_names))
        if unknown:
            raise ApiError(400, f"outputs: unknown {unknown}; expected some of {list(model.output_names)}")
        outputs, logged_inputs = await self._run(model, parsed.feeds, parsed.rows)
        request_id = uuid.uuid4().hex
        logged = self._record(
            model, "infer", request_id, started, logged_inputs, outputs, parsed.rows, is_probe(request)
        )
        wanted = parsed.outputs or model.output_names
        body_out: dict[str, Any] = {
            "model_name": model.ref.name,
            "model_version": model.ref.version,
            "parameters": {"run_id": model.ref.run_id, "request_id": request_id, "logged": logged},
        }
        if parsed.id is not None:
            body_out["id"] = parsed.id
        chosen = [(n, o) for n, o in zip(model.output_names, outputs, strict=True) if n in wanted]
        return infer_response(body_out, chosen, parsed.binary_output, provenance_headers(model, request_id))

    # --- named-feature records -----------------------------------------------------------------------

    @api.post("/predict")
    async def predict(self, request: Request) -> Response:
        """``{"records": {...}}`` or ``{"records": [{...}, ...]}``: one model call for the whole request."""
        model = self._current()
        body = await _json_body(request)
        if not isinstance(body, dict) or "records" not in body:
            raise ApiError(
                400, "body: expected a JSON object with 'records' (one record or a list of records)"
            )
        records = body["records"]
        rows = [records] if isinstance(records, dict) else records
        if not isinstance(rows, list):
            raise ApiError(400, "records: expected an object of named features or a list of them")
        started = time.perf_counter()
        try:
            feeds = model.feeds(rows)
        except InputError as exc:
            raise ApiError(400, str(exc)) from None
        outputs, logged_inputs = await self._run(model, feeds, len(rows))
        request_id = uuid.uuid4().hex
        logged = self._record(
            model, "predict", request_id, started, logged_inputs, outputs, len(rows), is_probe(request)
        )
        return json_response(
            {
                "request_id": request_id,
                "model_name": model.ref.name,
                "model_version": model.ref.version,
                "run_id": model.ref.run_id,
                "logged": logged,
                "predictions": model.predictions(outputs),
            },
            headers=provenance_headers(model, request_id),
        )

    @bentoml.api(batchable=True, max_batch_size=256, max_latency_ms=10_000, route="/predict_rows")
    async def predict_rows(self, rows: Rows) -> list[dict[str, Any]]:
        """Rows of named features; concurrent requests are batched into one model call."""
        model = self.follower.current
        if model is None:
            raise bentoml.exceptions.ServiceUnavailable("model: not loaded yet")
        started = time.perf_counter()
        feeds = model.feeds(rows)
        outputs = model.run(feeds)
        batch_id = uuid.uuid4().hex
        self._record(model, "predict_rows", batch_id, started, feeds, outputs, len(rows))
        provenance = {"model_version": model.ref.version, "run_id": model.ref.run_id, "request_id": batch_id}
        return [{**p, **provenance, "row": i} for i, p in enumerate(model.predictions(outputs))]

    @api.api_route(
        "/v2/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False
    )
    async def unknown_route(self, path: str) -> Response:
        return json_response({"error": f"path: /v2/{path} is not an Open Inference Protocol route"}, 404)


ModelService.add_asgi_middleware(BodyLimitMiddleware)  # type: ignore[attr-defined]
ModelService.add_asgi_middleware(ApiKeyMiddleware)  # type: ignore[attr-defined]
ModelService.add_asgi_middleware(JsonErrorMiddleware)  # type: ignore[attr-defined]
