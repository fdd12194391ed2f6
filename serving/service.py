"""The BentoML service: serves the registry's ``champion`` through onnxruntime, with provenance.

Routes (all JSON; errors are ``{"error": "<field>: <what was expected>"}`` with a 4xx):

* Open Inference Protocol v2: ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
  ``GET /v2/models/{name}[/versions/{version}]``, ``GET .../ready``, ``POST .../infer``.
* ``POST /predict``: ``{"records": {...} | [{...}, ...]}``, named features, one call to the model per request;
  ``POST /v2/models/{name}[/versions/{version}]/predict`` the same for any model served (``/predict``: the
  first, the default one).
* ``POST /predict_rows``: a BentoML batchable API for single-row traffic; concurrent requests are merged
  into one model call (adaptive batching) and each row's answer carries its provenance.
* The same Open Inference Protocol over gRPC on ``grpc_port`` when it is set (``serving/grpc_server.py``).
* BentoML's own ``/livez``, ``/readyz`` (false until a model is loaded and self-tested), ``/metrics``.

The service is a thin shell over the transport-agnostic data plane (``serving/dataplane.py``): each route
reads what the transport carries, calls the data plane and renders its answer; ``_refused`` maps its domain
errors to statuses. Every refusal, whichever layer makes it (a route, the body limit, the API key,
BentoML's own validation), leaves through ``JsonErrorMiddleware`` with a request id and is recorded once,
by the data plane. The service never imports scikit-learn or Prefect.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from importlib import metadata
from typing import Annotated, Any

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import AfterValidator, AllowInfNan
from starlette.requests import ClientDisconnect

from models.inference_records import PROBE_HEADER
from models.settings import Settings
from models.traffic import ROUTING_HEADER, routing_key
from serving import bentoml_fixes, dataplane, metrics, responses
from serving.dataplane import (
    OVERLAP_ROWS,
    DataPlane,
    DataPlaneError,
    InvalidInput,
)
from serving.fastpath import FastPathMiddleware, content_problem
from serving.feedback import FeedbackDesk, parse_labels
from serving.http import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    JsonErrorMiddleware,
    client_request_id,
    is_feedback,
    is_protected,
    route_of,
)
from serving.inference_log import InferenceLog, InferenceLogError
from serving.openapi import FEEDBACK_BODY, INFER_BODY, PREDICT_BODY, REFUSALS
from serving.protocol import BINARY_HEADER
from serving.repository import Repository

__all__ = ["OVERLAP_ROWS", "ModelService", "api"]

logger = logging.getLogger("mlops.serving")

api = FastAPI(
    title="mlops-path inference",
    version=metadata.version("mlops-path"),
    docs_url="/docs",
    redoc_url=None,
    openapi_url="/openapi.json",
)


@api.exception_handler(DataPlaneError)
async def _refused(request: Request, exc: DataPlaneError) -> Response:
    """The one error mapper: a domain error becomes its status (the edge adds the request id, records it)."""
    return responses.refused(exc)


def record_refusal(path: str, status: int, message: str, client_id: str | None = None) -> str:
    """What the edge calls for every error response: a request id, and a record for inference routes.

    Refusals of the inference routes count in the monitored error rate (a 404, a model or version not
    served here, does not: it is not the model's doing); those of other paths only get their id.
    """
    plane = dataplane.bound()
    if plane is None or status == 404 or not is_protected(path) or is_feedback(path):
        return client_id or uuid.uuid4().hex  # a refused label is not the model's error
    return plane.refuse(route_of(path), status, message, client_id)


def is_probe(request: Request) -> bool:
    return request.headers.get(PROBE_HEADER) == "1"


def _routing(request: Request, version: str | None) -> tuple[str, str | None]:
    """The request's id (made now when the client sent none: it may be the routing key) and its routing
    key, as the fast path's."""
    request_id = client_request_id(request.scope) or uuid.uuid4().hex
    return request_id, routing_key(
        request.headers.get(ROUTING_HEADER), request_id, version, is_probe(request)
    )


async def _body(request: Request) -> bytes:
    try:
        return await request.body()
    except ClientDisconnect:
        raise InvalidInput("body: the client closed the connection before sending all of it") from None


def _checked_against_current_model(rows: list[dict[str, float | str]]) -> list[dict[str, float | str]]:
    """Validate a /predict_rows request on its own, before it is merged into a batch with others."""
    plane = dataplane.bound()
    if plane is None:
        raise ValueError("no model is loaded yet")
    plane.check_rows(rows)
    return rows


FiniteOrText = Annotated[float, AllowInfNan(False)] | str
Rows = Annotated[list[dict[str, FiniteOrText]], AfterValidator(_checked_against_current_model)]


def report_patches(patches: list[bentoml_fixes.Patch]) -> None:
    """One log line per fix to a third-party internal (a warning when one is not applied) and the metric."""
    for patch in patches:
        metrics.patch_applied(patch.name, patch.applied)
        (logger.info if patch.applied else logger.warning)("patch %s", patch.line())


PATCHES = bentoml_fixes.install()  # before BentoML builds the app from this module: see its docstring


# Access log and tracing are off on the inference routes: every request is already one line of the
# inference log with its own request id, and the per-request span cost a third of the request path.
@bentoml.service(
    name="mlops_model",
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/predict", "/infer$"]},  # /predict matches the models' own too
)
@bentoml.asgi_app(api, path="/")
class ModelService:
    def __init__(self) -> None:
        settings = Settings()
        logger.setLevel(logging.INFO)  # BentoML's root handler passes warnings only; swaps are news too
        worker = bentoml.server_context.worker_index or 0
        log = InferenceLog(
            settings.inference_log_dir, worker=str(worker), max_bytes=settings.inference_log_max_bytes
        )
        repository = Repository(
            tracking_uri=settings.resolved_tracking_uri,
            names=settings.served_models,
            cache_dir=settings.model_cache_dir,
            poll_s=settings.swap_poll_s,
            budget_mib=settings.version_budget_mib,
            on_event=metrics.alias_event,
        )
        self.plane = DataPlane(
            repository, log, fail_closed=settings.inference_log_policy == "fail_closed"
        ).bind()
        self.desk = FeedbackDesk(
            settings.inference_log_dir,
            settings.feedback_log_dir,
            worker=str(worker),
            window_s=settings.feedback_window_h * 3600,
        )
        self.grpc_port = settings.grpc_port
        self.grpc: Any = None  # the gRPC transport, started on the worker's event loop
        repository.start()
        report_patches(PATCHES)
        # Everything loaded so far (modules, BentoML, MLflow) lives as long as the process: out of the
        # collector's way, so that a gen-2 collection only walks what requests create.
        gc.collect()
        gc.freeze()

    async def __is_ready__(self) -> bool:
        return self.plane.ready

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        """The Open Inference Protocol over gRPC on ``grpc_port``, when set: same worker, same data plane."""
        if self.grpc_port is not None:
            from serving import grpc_server  # grpc's import only where it is served

            self.grpc = await grpc_server.start(self.plane, Settings(), self.desk)
            logger.info("gRPC: serving the Open Inference Protocol on port %s", self.grpc_port)

    @bentoml.on_shutdown
    async def close(self) -> None:
        if self.grpc is not None:
            from serving import grpc_server

            await grpc_server.stop(self.grpc)
        self.plane.close()
        self.desk.close()

    # --- Open Inference Protocol ---------------------------------------------------------------------

    @api.get("/v2")
    async def server_metadata(self) -> Response:
        return responses.json_response(self.plane.server_metadata())

    @api.get("/v2/health/live")
    async def live(self) -> Response:
        return responses.json_response({"live": True})

    @api.get("/v2/health/ready")
    async def ready(self) -> Response:
        return responses.json_response({"ready": self.plane.ready}, 200 if self.plane.ready else 503)

    @api.get("/v2/models/{name}")
    async def metadata(self, name: str) -> Response:
        return responses.json_response(await self.plane.model_metadata(name))

    @api.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(self, name: str, version: str) -> Response:
        return responses.json_response(await self.plane.model_metadata(name, version))

    @api.get("/v2/models/{name}/ready")
    async def model_ready(self, name: str) -> Response:
        return responses.json_response({"name": name, "ready": self.plane.model(name) is not None})

    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(self, name: str, version: str) -> Response:
        ready = self.plane.model(name, version) is not None
        return responses.json_response({"name": name, "version": version, "ready": ready})

    @api.post("/v2/models/{name}/infer", openapi_extra={"requestBody": INFER_BODY}, responses=REFUSALS)
    async def infer(self, name: str, request: Request) -> Response:
        return await self._infer(request, name, None)

    @api.post(
        "/v2/models/{name}/versions/{version}/infer",
        openapi_extra={"requestBody": INFER_BODY},
        responses=REFUSALS,
    )
    async def version_infer(self, name: str, version: str, request: Request) -> Response:
        return await self._infer(request, name, version)

    async def _infer(self, request: Request, name: str, version: str | None) -> Response:
        request_id, key = _routing(request, version)
        await self.plane.served_model(name, version, key)  # a wrong name or version: refused before the body
        body, binary = await _body(request), request.headers.get(BINARY_HEADER)
        return await responses.infer(
            self.plane, name, version, body, binary, is_probe(request), request_id, key
        )

    # --- named-feature records -----------------------------------------------------------------------

    @api.post("/predict", openapi_extra={"requestBody": PREDICT_BODY}, responses=REFUSALS)
    async def predict(self, request: Request) -> Response:
        """``{"records": {...}}`` or ``{"records": [{...}, ...]}``: one model call for the whole request."""
        request_id, key = _routing(request, None)
        model = self.plane.current(key)  # not ready: 503 before the body is read
        body = await _body(request)
        return await responses.predict(self.plane, body, is_probe(request), request_id, model, key)

    @api.post("/v2/models/{name}/predict", openapi_extra={"requestBody": PREDICT_BODY}, responses=REFUSALS)
    async def model_predict(self, name: str, request: Request) -> Response:
        """As ``/predict``, answered by this model's champion."""
        return await self._predict(request, name, None)

    @api.post(
        "/v2/models/{name}/versions/{version}/predict",
        openapi_extra={"requestBody": PREDICT_BODY},
        responses=REFUSALS,
    )
    async def version_predict(self, name: str, version: str, request: Request) -> Response:
        """As ``/predict``, answered by this version of the model."""
        return await self._predict(request, name, version)

    async def _predict(self, request: Request, name: str, version: str | None) -> Response:
        request_id, key = _routing(request, version)
        model = await self.plane.served_model(name, version, key)  # refused before the body is read
        body = await _body(request)
        return await responses.predict(self.plane, body, is_probe(request), request_id, model, key)

    @bentoml.api(batchable=True, max_batch_size=256, max_latency_ms=10_000, route="/predict_rows")
    async def predict_rows(self, rows: Rows) -> list[dict[str, Any]]:
        """Rows of named features; concurrent requests are batched into one model call."""
        if not self.plane.ready:
            raise bentoml.exceptions.ServiceUnavailable("model: not loaded yet")
        try:
            return self.plane.predict_rows(rows)
        except dataplane.RecordNotWritten as exc:
            raise bentoml.exceptions.ServiceUnavailable(str(exc)) from None

    # --- ground truth for earlier answers ---------------------------------------------------------------

    @api.post("/v2/models/{name}/feedback", openapi_extra={"requestBody": FEEDBACK_BODY}, responses=REFUSALS)
    async def feedback(self, name: str, request: Request) -> Response:
        """Labels for earlier request ids (``serving/feedback.py``), all checked, then written and synced
        before the answer."""
        feedback_id = client_request_id(request.scope) or uuid.uuid4().hex
        problem = content_problem(request.scope, False)
        if problem is not None:
            return responses.json_response({"error": problem}, 415)
        model = self.plane.model(name)  # a model not served here: 404, before the body is read
        labels = parse_labels(await _body(request))
        loop = asyncio.get_running_loop()
        try:
            accepted = await loop.run_in_executor(
                None, self.desk.submit, name, labels, model.classes, feedback_id
            )
        except InferenceLogError as exc:
            return responses.json_response({"error": f"feedback: not recorded, nothing was kept: {exc}"}, 503)
        body = {"model_name": name, "feedback_id": feedback_id, "written": accepted.written,
                "repeated": accepted.repeated}  # fmt: skip
        return responses.json_response(body, headers={"x-request-id": feedback_id})

    # --- the OIP model repository extension -------------------------------------------------------------

    @api.post("/v2/repository/index")
    async def repository_index(self) -> Response:
        """Every loaded version, its state and why it is loaded (the aliases holding it, or by path)."""
        return responses.json_response(self.plane.repository_index())  # type: ignore[arg-type]

    @api.post("/v2/repository/models/{name}/{action}")
    async def repository_control(self, name: str, action: str) -> Response:
        if action not in ("load", "unload"):
            return responses.json_response({"error": f"repository: no action {action!r}"}, 404)
        return responses.json_response(
            {
                "error": f"repository: {action} is refused: this server loads what the registry's aliases "
                f"name (move an alias: mlops promote or rollback), and a version on its first request "
                f"by path (/v2/models/{name}/versions/{{version}})"
            },
            403,
        )

    @api.api_route(
        "/v2/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False
    )
    async def unknown_route(self, path: str) -> Response:
        return responses.json_response(
            {"error": f"path: /v2/{path} is not an Open Inference Protocol route"}, 404
        )


# The first added is the outermost, and all four run right after BentoML's request metrics (bentoml_fixes).
# The fast path is the edge of the inference routes; for everything it passes on, every error response, the
# body limit's and the API key's included, leaves through the JSON error edge, which gives it a request id
# and has it recorded.
ModelService.add_asgi_middleware(FastPathMiddleware, on_refusal=record_refusal)  # type: ignore[attr-defined]
ModelService.add_asgi_middleware(JsonErrorMiddleware, on_refusal=record_refusal)  # type: ignore[attr-defined]
ModelService.add_asgi_middleware(BodyLimitMiddleware)  # type: ignore[attr-defined]
ModelService.add_asgi_middleware(ApiKeyMiddleware)  # type: ignore[attr-defined]
