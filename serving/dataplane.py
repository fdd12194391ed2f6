"""The data plane: what a serving worker answers, whatever the transport (the shape of MLServer's
``DataPlane`` and KServe's ``dataplane``).

Health, server and model metadata, readiness, Open Inference Protocol ``infer`` and named-feature
``predict`` over the models the worker holds (its ``Repository`` keeps each on its aliases, and loads a
version asked for by path). It takes bytes and
values, returns values, and raises the domain errors below, never HTTP statuses: each transport maps them
(``serving/service.py`` to 400/404/503). Every answer is a record in the inference log, and every refusal
is one too, recorded here by ``refuse`` whichever layer refused it (the routes, the transport's own
middlewares, the framework's validation).

One data plane per worker process: ``bind`` makes it the one ``bound()`` returns to the parts of a transport
that the framework builds before the service exists (its middlewares, its validators).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import orjson

from models.features import ONNX_TO_DATATYPE, InputError
from models.registry import CANARY, SHADOW
from serving import metrics
from serving.inference_log import InferenceLog, InferenceLogError
from serving.model import LoadedModel
from serving.protocol import parse_infer_request, split_body
from serving.repository import Repository, Served, VersionRefused

logger = logging.getLogger("mlops.serving")

SERVER_NAME = "mlops-path"
# From this many rows a request's inputs are written out for the inference log while onnxruntime runs
# (it releases the GIL): 1,000 rows x 30 features take 0.6 ms to encode against 2.3 ms of inference.
OVERLAP_ROWS = 64
# Copies for the shadow waiting to run; past this many a copy is dropped (counted), never queued at the
# expense of the answered requests' memory or time.
SHADOW_QUEUE = 64

Feeds = dict[str, Any]


class DataPlaneError(Exception):
    """A request the data plane refuses; the message names the field and what was expected."""


class InvalidInput(DataPlaneError):  # noqa: N818 - the protocol's own word (gRPC INVALID_ARGUMENT)
    """The request is malformed or does not fit the model's inputs."""


class ModelNotFound(DataPlaneError):  # noqa: N818
    """No such model or version is served here."""


class ModelNotReady(DataPlaneError):  # noqa: N818
    """No model is loaded yet (the worker is starting): retry when ready."""


class RecordNotWritten(DataPlaneError):  # noqa: N818
    """The inference log could not record the answer, and the policy is to fail closed: it is withheld."""


class VersionConflict(DataPlaneError):  # noqa: N818
    """The version is registered but cannot be served (it did not pass its gate, or failed to load)."""


@dataclass(frozen=True)
class Answer:
    """What a model answered to one request, and how it was recorded."""

    model: LoadedModel
    request_id: str
    logged: bool
    outputs: list[Any]

    @property
    def provenance(self) -> dict[str, str]:
        ref = self.model.ref
        return {"request_id": self.request_id, "model_version": ref.version, "run_id": ref.run_id}


@dataclass(frozen=True)
class Inferred(Answer):
    """An OIP answer: the outputs asked for (all by default), the request's ``id``, binary or not."""

    wanted: tuple[str, ...] = ()
    id: str | None = None
    binary: frozenset[str] = frozenset()  # the outputs answered as binary tensors, the others as JSON

    def chosen(self) -> list[tuple[str, Any]]:
        pairs = zip(self.model.output_names, self.outputs, strict=True)
        return [(name, output) for name, output in pairs if name in self.wanted]


def _datatype(onnx_type: str) -> str:
    return ONNX_TO_DATATYPE.get(onnx_type, onnx_type)


def model_metadata(model: LoadedModel, versions: Sequence[str] = ()) -> dict[str, Any]:
    """A model's OIP metadata; ``versions`` the ones loaded (this one's first)."""
    outputs = model.session.get_outputs()
    return {
        "name": model.ref.name,
        "versions": [model.ref.version, *(v for v in versions if v != model.ref.version)],
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


def records_of(body: Any) -> list[Any]:
    """The rows of a ``/predict`` body: ``{"records": {...}}`` or ``{"records": [{...}, ...]}``."""
    if not isinstance(body, dict) or "records" not in body:
        raise InvalidInput("body: expected a JSON object with 'records' (one record or a list of records)")
    records = body["records"]
    rows = [records] if isinstance(records, dict) else records
    if not isinstance(rows, list):
        raise InvalidInput("records: expected an object of named features or a list of them")
    return rows


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body: invalid JSON ({exc})") from None


class DataPlane:
    def __init__(self, repository: Repository, log: InferenceLog, *, fail_closed: bool = False) -> None:
        self.repository = repository
        self.log = log
        self.fail_closed = fail_closed  # an answer the log cannot record is refused (503), not sent unlogged
        self.inference_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        # versions asked for by path load one at a time, off the event loop
        self.load_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="version-loader")
        # a canary's calls: a slow version under trial queues only its own requests
        self.canary_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="canary")
        # the shadow's copies run here, after the request they copy has been answered
        self.shadow_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._shadow_pending = 0
        self._shadow_lock = threading.Lock()

    def bind(self) -> DataPlane:
        global _bound
        _bound = self
        return self

    def close(self) -> None:
        self.repository.stop()
        self.load_thread.shutdown(wait=True, cancel_futures=True)
        self.shadow_thread.shutdown(wait=True)
        self.canary_thread.shutdown(wait=True)
        self.inference_thread.shutdown(wait=True)
        self.log.close()

    # --- health and metadata ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.repository.ready

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": SERVER_NAME,
            "version": metadata.version("mlops-path"),
            "extensions": ["model_repository", "model_repository_metadata"],
        }

    def current(self, key: str | None = None) -> LoadedModel:
        """What the named-feature routes answer with: the first model served, its champion (or its canary,
        for ``key``'s place in the split)."""
        return _answering(self.repository.default, key)

    def model(self, name: str, version: str | None = None, key: str | None = None) -> LoadedModel:
        """The version asked for if this worker holds it, else the one that answers the model's requests
        with routing key ``key`` (the champion, or the canary for its share; no key: the champion). A
        dictionary read."""
        served = self.repository.models.get(name)
        if served is None:
            expected = " or ".join(repr(n) for n in self.repository.names)
            raise ModelNotFound(f"model: {name!r} is not served here; expected {expected}")
        if version is None:
            return _answering(served, key)
        model = self.repository.held(name, version)
        if model is None:
            loaded = ", ".join(served.versions()) or "none yet"
            raise ModelNotFound(f"version: {version!r} is not loaded; this server holds version(s) {loaded}")
        return model

    async def served_model(
        self, name: str, version: str | None = None, key: str | None = None
    ) -> LoadedModel:
        """As ``model``, but a version not held yet is loaded if it is registered and passed its gate."""
        try:
            return self.model(name, version, key)
        except ModelNotFound:
            if version is None or name not in self.repository.models:
                raise
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.load_thread, self.repository.load_version, name, version)
        except VersionRefused as exc:
            raise (ModelNotFound if exc.status == 404 else VersionConflict)(str(exc)) from None

    async def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = await self.served_model(name, version)
        return model_metadata(model, self.repository.models[name].versions())

    def repository_index(self) -> list[dict[str, Any]]:
        """The OIP repository extension's index: every loaded version, ready, and why it is loaded."""
        return [
            {"name": e.name, "version": e.version, "state": "READY", "reason": "; ".join(e.reasons)}
            for e in self.repository.index()
        ]

    # --- inference ---------------------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: str | None,
        body: bytes,
        binary_header: str | None,
        probe: bool,
        request_id: str | None = None,
        key: str | None = None,
    ) -> Inferred:
        """An OIP inference request (JSON, or JSON followed by binary tensors) for ``name``/``version``;
        ``key``: its routing key (``models/traffic.py``), None when it is not split."""
        model = await self.served_model(name, version, key)
        started = time.perf_counter()
        try:
            head, binary = split_body(body, binary_header)
        except InputError as exc:
            raise InvalidInput(str(exc)) from None
        return await self.infer_request(model, parse_json(head), binary, probe, request_id, started, key)

    async def infer_request(
        self,
        model: LoadedModel,
        request: Any,
        binary: bytes,
        probe: bool,
        request_id: str | None = None,
        started: float | None = None,
        key: str | None = None,
    ) -> Inferred:
        """An infer request already read into the REST shape (the binary part apart), whatever carried it:
        one validation, one set of messages, one record for every transport."""
        started = time.perf_counter() if started is None else started
        try:
            parsed = parse_infer_request(request, model.inputs, binary)
        except InputError as exc:
            raise InvalidInput(str(exc)) from None
        unknown = sorted(set(parsed.outputs or ()) - set(model.output_names))
        if unknown:
            raise InvalidInput(f"outputs: unknown {unknown}; expected some of {list(model.output_names)}")
        role = self._role(model, key)
        outputs, logged_inputs = await self._run(model, parsed.feeds, parsed.rows, role is not None)
        request_id = request_id or uuid.uuid4().hex
        logged = self._record(
            model, "infer", request_id, started, logged_inputs, outputs, parsed.rows, probe, role
        )

        def feeds_for(shadow: LoadedModel) -> Feeds:
            same = shadow.inputs == model.inputs
            return parsed.feeds if same else parse_infer_request(request, shadow.inputs, binary).feeds

        self._mirror(model, key, request_id, "infer", parsed.rows, feeds_for)
        return Inferred(
            model,
            request_id,
            logged,
            outputs,
            wanted=tuple(parsed.outputs or model.output_names),
            id=parsed.id,
            binary=frozenset(n for n in model.output_names if parsed.is_binary(n)),
        )

    async def predict(
        self,
        body: bytes,
        probe: bool,
        request_id: str | None = None,
        model: LoadedModel | None = None,
        key: str | None = None,
    ) -> tuple[Answer, list[dict[str, Any]]]:
        """Named-feature records, one model call for the whole request; the answer and its predictions.

        ``model``: the one a model's own route resolved (``served_model``); else the default model's, for
        routing key ``key``."""
        model = model or self.current(key)
        rows = records_of(parse_json(body))
        started = time.perf_counter()
        try:
            feeds = model.feeds(rows)
        except InputError as exc:
            raise InvalidInput(str(exc)) from None
        role = self._role(model, key)
        outputs, logged_inputs = await self._run(model, feeds, len(rows), role is not None)
        request_id = request_id or uuid.uuid4().hex
        logged = self._record(
            model, "predict", request_id, started, logged_inputs, outputs, len(rows), probe, role
        )
        self._mirror(
            model, key, request_id, "predict", len(rows),
            lambda shadow: feeds if shadow.inputs == model.inputs else shadow.feeds(rows),
        )  # fmt: skip
        return Answer(model, request_id, logged, outputs), model.predictions(outputs)

    def predict_rows(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows merged from several requests by the transport's batcher: one model call, one record."""
        model = self.current()
        started = time.perf_counter()
        feeds = model.feeds(list(rows))
        outputs = model.run(feeds)
        batch_id = uuid.uuid4().hex
        self._record(model, "predict_rows", batch_id, started, feeds, outputs, len(rows))
        provenance = {"model_version": model.ref.version, "run_id": model.ref.run_id, "request_id": batch_id}
        return [{**p, **provenance, "row": i} for i, p in enumerate(model.predictions(outputs))]

    def check_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate one request's rows on their own, before a batcher merges them with others'."""
        model = self.repository.default.champion
        if model is None:
            raise ValueError("no model is loaded yet")
        model.feeds(rows)
        return rows

    # --- refusals ----------------------------------------------------------------------------------------

    def refuse(self, route: str, status: int, message: str, request_id: str | None = None) -> str:
        """Record a refused request (it counts in the monitored error rate); the request id it was given.

        Called by the transport for every refusal, whichever layer refused it.
        """
        request_id = request_id or uuid.uuid4().hex
        current = self.repository.default.champion
        with contextlib.suppress(InferenceLogError):  # the refusal is still answered, with its id
            self.log.write_error(
                request_id=request_id,
                model=current.ref.name if current else "",
                version=current.ref.version if current else "",
                route=route,
                status=status,
                error=message,
            )
        return request_id

    # --- traffic roles -----------------------------------------------------------------------------------

    def _role(self, model: LoadedModel, key: str | None) -> str | None:
        """``canary`` when the canary answered a split request; None for the champion or a pinned version."""
        if key is None:
            return None
        served = self.repository.models.get(model.ref.name)
        if served is None or served.followers[CANARY].current is not model or served.champion is model:
            return None
        return CANARY

    def _mirror(
        self,
        answered: LoadedModel,
        key: str | None,
        request_id: str,
        route: str,
        rows: int,
        feeds_for: Callable[[LoadedModel], Feeds],
    ) -> None:
        """A copy of an answered request for the shadow, if it is in the shadow's share; run in the
        shadow's thread, never waited for, dropped (and counted) when that thread is behind."""
        if key is None:
            return
        served = self.repository.models.get(answered.ref.name)
        shadow = served.shadowing(key, answered) if served is not None else None
        if shadow is None:
            return
        with self._shadow_lock:
            if self._shadow_pending >= SHADOW_QUEUE:
                metrics.shadow("dropped")
                return
            self._shadow_pending += 1
        try:
            self.shadow_thread.submit(self._shadow, shadow, request_id, route, rows, feeds_for)
        except RuntimeError:  # shutting down
            with self._shadow_lock:
                self._shadow_pending -= 1

    def _shadow(
        self,
        model: LoadedModel,
        request_id: str,
        route: str,
        rows: int,
        feeds_for: Callable[[LoadedModel], Feeds],
    ) -> None:
        """The shadow's run of a copy: its outputs (or its error) in the log as ``role`` shadow, under the
        answered request's id."""
        try:
            started = time.perf_counter()
            try:
                feeds = feeds_for(model)
                outputs = model.run(feeds)
            except Exception as exc:  # noqa: BLE001 - the shadow's failure is evidence, never a crash
                metrics.shadow("failed")
                status = 400 if isinstance(exc, InputError) else 500
                with contextlib.suppress(InferenceLogError):
                    self.log.write_error(
                        request_id=request_id, model=model.ref.name, version=model.ref.version, route=route,
                        status=status, error=f"shadow: {type(exc).__name__}: {exc}", role=SHADOW,
                    )  # fmt: skip
                return
            self._record(model, route, request_id, started, feeds, outputs, rows, role=SHADOW)
            metrics.shadow("mirrored")
        except Exception:  # the thread must outlive any surprise
            logger.exception("shadow: the copy of request %s failed", request_id)
        finally:
            with self._shadow_lock:
                self._shadow_pending -= 1

    # --- internals ---------------------------------------------------------------------------------------

    async def _run(
        self, model: LoadedModel, feeds: dict[str, Any], rows: int, offload: bool = False
    ) -> tuple[list[Any], Any]:
        """The model's outputs and the inputs as the log will hold them (encoded during inference).

        ``offload``: off the event loop whatever the size (a canary's call: however slow the version under
        trial is, the champion's requests on this worker do not wait behind it)."""
        if rows < OVERLAP_ROWS and not offload:
            return model.run(feeds), feeds
        thread = self.canary_thread if offload else self.inference_thread
        running = asyncio.get_running_loop().run_in_executor(thread, model.run, feeds)
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
        role: str | None = None,
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
                role=role,
            )
        except InferenceLogError as exc:
            # Policy fail_open (the default): the prediction is still served; the failure is counted
            # (metric and ``logged: false``) so served == logged + failed reconciles afterwards. Policy
            # fail_closed: the answer is withheld with a 503 (a shadow's copy is never answered anyway).
            metrics.log_failure()
            if self.fail_closed and role != SHADOW:
                raise RecordNotWritten(
                    f"inference log: this answer could not be recorded ({exc}), so it is withheld: records "
                    "are mandatory here (MLOPS_INFERENCE_LOG_POLICY=fail_closed); retry later"
                ) from None
            return False
        return True


def _answering(served: Served, key: str | None) -> LoadedModel:
    model = served.champion if key is None else served.answering(key)
    if model is None:
        raise ModelNotReady("model: not loaded yet; retry when /v2/health/ready says ready")
    return model


_bound: DataPlane | None = None


def bound() -> DataPlane | None:
    """This worker's data plane, once the service has made it (``DataPlane.bind``)."""
    return _bound
