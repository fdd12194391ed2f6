"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), on REST's data plane.

The service of the protocol's own ``grpc_predict_v2.proto`` (``serving/grpc_v2``, made by ``make protos``):
ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer, served by every BentoML
worker on the ``grpc_port`` setting (the workers share the port, as they share the HTTP one). A ModelInfer
request is read into the shape the REST route reads (typed ``contents`` as ``data``, ``raw_input_contents``
as the binary tensor extension's bytes) and handed to the same ``DataPlane.infer_request``: one validation
with the same messages, one inference log, one provenance. Raw inputs are answered with
``raw_output_contents``, typed ones with typed contents (what KServe and Triton do).

Refusals are status codes (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, UNAUTHENTICATED) whose details are the
REST error's words, recorded like REST's; every answer and refusal carries its request id (the client's
``x-request-id`` metadata when it is one we keep) and an answer its model version and run id, in the
response's ``parameters`` and in trailing metadata. ModelInfer needs ``authorization: Bearer <key>`` when an
API key is set; TLS when a certificate is.

Beside it, ``mlops.feedback.Feedback/Submit`` (``serving/grpc_v2/feedback.proto``) takes ground truth for
earlier answers as the REST feedback route does, through the same checks and the same feedback log
(``serving/feedback.py``): INVALID_ARGUMENT, NOT_FOUND (an unknown request id or model), ALREADY_EXISTS (a
different label), RESOURCE_EXHAUSTED (too many labels), UNAVAILABLE (not recorded), the API key as for
ModelInfer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc
import numpy as np

from models.inference_records import PROBE_HEADER
from models.settings import Settings
from models.traffic import ROUTING_HEADER, routing_key
from serving.dataplane import (
    DataPlane,
    DataPlaneError,
    Inferred,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    RecordNotWritten,
    VersionConflict,
)
from serving.feedback import (
    FeedbackDesk,
    Label,
    LabelConflict,
    TooManyLabels,
    UnknownRequest,
)
from serving.grpc_v2 import feedback_pb2 as fb
from serving.grpc_v2 import feedback_pb2_grpc as fb_grpc
from serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from serving.http import REQUEST_ID, authorization_problem, expected_authorization
from serving.inference_log import InferenceLogError
from serving.protocol import WIRE_DTYPES, binary_output_tensor

# The typed field of ``InferTensorContents`` that carries each datatype (FP16 travels only raw).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
CODES = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    RecordNotWritten: grpc.StatusCode.UNAVAILABLE,
    VersionConflict: grpc.StatusCode.FAILED_PRECONDITION,
}
# Recorded refusals keep REST's statuses, so the monitored error rate reads one vocabulary.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
}
GRACE_S = 5.0  # calls in flight at shutdown get this long to finish


class Refused(Exception):  # noqa: N818 - a refusal, as the REST edge's
    """A call refused before the data plane saw it (its API key)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- messages <-> the REST shape (pure) -------------------------------------------------------------------


def parameter_value(parameter: pb.InferParameter) -> bool | int | str | None:
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def set_parameter(target: Any, key: str, value: bool | int | str) -> None:
    """``target[key]`` (a ``map<string, InferParameter>``) set to ``value`` by its type."""
    if isinstance(value, bool):
        target[key].bool_param = value
    elif isinstance(value, int):
        target[key].int64_param = value
    else:
        target[key].string_param = value


def _texts(index: int, values: Sequence[bytes]) -> list[str]:
    try:
        return [value.decode() for value in values]
    except UnicodeDecodeError:
        raise InvalidInput(f"inputs[{index}].contents.bytes_contents: expected UTF-8 text") from None


def request_body(request: pb.ModelInferRequest) -> tuple[dict[str, Any], bytes]:
    """The request as the REST route reads it: its JSON part, and its binary part (the raw contents, in the
    order of the inputs, each tensor's ``binary_data_size`` its own length)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents: expected one per input ({len(request.inputs)}), got {len(raw)}"
        )
    tensors: list[dict[str, Any]] = []
    for index, tensor in enumerate(request.inputs):
        body: dict[str, Any] = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
        if raw:
            body["parameters"] = {"binary_data_size": len(raw[index])}
        else:
            values = getattr(tensor.contents, CONTENTS.get(tensor.datatype, "fp64_contents"))
            body["data"] = _texts(index, values) if tensor.datatype == "BYTES" else list(values)
        tensors.append(body)
    json_part: dict[str, Any] = {"inputs": tensors}
    if request.id:
        json_part["id"] = request.id
    if request.outputs:
        json_part["outputs"] = [{"name": output.name} for output in request.outputs]
    return json_part, b"".join(raw)


def _raw(values: np.ndarray) -> tuple[str, list[int], bytes]:
    header, data = binary_output_tensor("", values)
    return header["datatype"], header["shape"], data


def response_message(answer: Inferred, raw: bool) -> pb.ModelInferResponse:
    """The answer as ``ModelInferResponse``: raw contents when the request's were raw, typed otherwise."""
    ref = answer.model.ref
    response = pb.ModelInferResponse(model_name=ref.name, model_version=ref.version, id=answer.id or "")
    for key, value in (("run_id", ref.run_id), ("request_id", answer.request_id), ("logged", answer.logged)):
        set_parameter(response.parameters, key, value)
    for name, values in answer.chosen():
        datatype, shape, data = _raw(np.asarray(values))
        tensor = response.outputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            response.raw_output_contents.append(data)
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(str(v).encode() for v in np.ravel(values))
        else:
            flat = np.frombuffer(data, dtype=WIRE_DTYPES[datatype])
            getattr(tensor.contents, CONTENTS[datatype]).extend(flat.tolist())
    return response


def provenance_metadata(answer: Inferred) -> tuple[tuple[str, str], ...]:
    ref = answer.model.ref
    return (("x-request-id", answer.request_id), ("x-model-version", ref.version), ("x-run-id", ref.run_id))


def metadata_of(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def client_request_id(metadata: dict[str, str]) -> str | None:
    """The client's ``x-request-id`` when it is one REST would keep too, else None."""
    given = metadata.get("x-request-id")
    return given if given is not None and REQUEST_ID.fullmatch(given) else None


# --- the service -------------------------------------------------------------------------------------------


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's six calls over one data plane; ``expected``: the ``authorization`` ModelInfer needs."""

    def __init__(self, plane: DataPlane, expected: bytes | None = None) -> None:
        self.plane = plane
        self.expected = expected

    async def ServerLive(  # noqa: N802 - the protocol's names
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self.plane.model(request.name, request.version or None)
        except DataPlaneError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.plane.server_metadata())

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        try:
            found = await self.plane.model_metadata(request.name, request.version or None)
        except DataPlaneError as exc:
            await _abort(context, CODES.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT), str(exc))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=found["name"],
            versions=found["versions"],
            platform=found["platform"],
            inputs=[tensor(**t) for t in found["inputs"]],
            outputs=[tensor(**t) for t in found["outputs"]],
        )

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        started = time.perf_counter()
        metadata = metadata_of(context)
        client_id = client_request_id(metadata)
        request_id = client_id or uuid.uuid4().hex  # made now: it may be the routing key
        probe, version = metadata.get(PROBE_HEADER) == "1", request.model_version or None
        key = routing_key(metadata.get(ROUTING_HEADER), request_id, version, probe)
        try:
            self._authorize(metadata)
            model = await self.plane.served_model(request.model_name, version, key)
            body, binary = request_body(request)
            answer = await self.plane.infer_request(model, body, binary, probe, request_id, started, key)
        except Refused as exc:
            await self._refuse(context, exc.code, str(exc), client_id)
        except DataPlaneError as exc:
            await self._refuse(
                context, CODES.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT), str(exc), client_id
            )
        context.set_trailing_metadata(provenance_metadata(answer))
        return response_message(answer, raw=bool(request.raw_input_contents))

    def _authorize(self, metadata: dict[str, str]) -> None:
        if self.expected is None:
            return
        problem = authorization_problem(metadata.get("authorization", "").encode(), self.expected)
        if problem is not None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, problem)

    async def _refuse(
        self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, client_id: str | None
    ) -> NoReturn:
        """Abort the call with ``code``, the refusal recorded as REST records it (a 404 only gets its id)."""
        status = HTTP_STATUS.get(code, 400)
        if status == 404:
            request_id = client_id or uuid.uuid4().hex
        else:
            request_id = self.plane.refuse("infer", status, message, client_id)
        await _abort(context, code, message, (("x-request-id", request_id),))


FEEDBACK_CODES = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    UnknownRequest: grpc.StatusCode.NOT_FOUND,
    LabelConflict: grpc.StatusCode.ALREADY_EXISTS,
    TooManyLabels: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def labels_of(request: fb.FeedbackRequest) -> list[Label]:
    """The call's labels as the REST route reads them; a label with no value is refused."""
    labels = []
    for index, given in enumerate(request.labels):
        kind = given.WhichOneof("value")
        if kind is None:
            raise InvalidInput(f"labels[{index}].label: missing")
        if not given.request_id:
            raise InvalidInput(f"labels[{index}].request_id: expected the request id of an answer")
        labels.append(Label(given.request_id, given.row, getattr(given, kind)))
    if not labels:
        raise InvalidInput("labels: expected at least one")
    return labels


class FeedbackServicer(fb_grpc.FeedbackServicer):
    """``Submit``: the REST feedback route's checks and log, over gRPC."""

    def __init__(self, plane: DataPlane, desk: FeedbackDesk, expected: bytes | None = None) -> None:
        self.plane, self.desk, self.expected = plane, desk, expected

    async def Submit(  # noqa: N802 - the proto's name
        self, request: fb.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> fb.FeedbackResponse:
        metadata = metadata_of(context)
        feedback_id = client_request_id(metadata) or uuid.uuid4().hex
        trailing = (("x-request-id", feedback_id),)
        if self.expected is not None:
            problem = authorization_problem(metadata.get("authorization", "").encode(), self.expected)
            if problem is not None:
                await _abort(context, grpc.StatusCode.UNAUTHENTICATED, problem, trailing)
        try:
            model = self.plane.model(request.model_name)
            labels = labels_of(request)
            loop = asyncio.get_running_loop()
            accepted = await loop.run_in_executor(
                None, self.desk.submit, request.model_name, labels, model.classes, feedback_id
            )
        except DataPlaneError as exc:
            await _abort(context, FEEDBACK_CODES.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT), str(exc),
                         trailing)  # fmt: skip
        except InferenceLogError as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"feedback: not recorded: {exc}", trailing)
        context.set_trailing_metadata(trailing)
        return fb.FeedbackResponse(model_name=request.model_name, feedback_id=feedback_id,
                                   written=accepted.written, repeated=accepted.repeated)  # fmt: skip


async def _abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    trailing: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    await context.abort(code, message, trailing_metadata=trailing)
    raise AssertionError("grpc's abort returned")  # it raises, to end the call


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1),  # every worker listens on the one port
    ]


async def start(plane: DataPlane, settings: Settings, desk: FeedbackDesk | None = None) -> grpc.aio.Server:
    """A started gRPC server for ``plane`` on ``settings.grpc_port`` (TLS with the service's certificate)."""
    if settings.grpc_port is None:
        raise ValueError("grpc_port: not set")
    server = grpc.aio.server(options=server_options(settings))
    key = settings.api_key.get_secret_value() if settings.api_key else None
    servicer = InferenceServicer(plane, expected_authorization(key))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    if desk is not None:
        feedback = FeedbackServicer(plane, desk, expected_authorization(key))
        fb_grpc.add_FeedbackServicer_to_server(feedback, server)  # type: ignore[no-untyped-call]
    address = f"{settings.serve_host}:{settings.grpc_port}"
    if settings.tls_certfile and settings.tls_keyfile:
        pair = (settings.tls_keyfile.read_bytes(), settings.tls_certfile.read_bytes())
        bound = server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
    else:
        bound = server.add_insecure_port(address)
    if bound != settings.grpc_port:
        raise OSError(f"grpc_port: could not listen on {address}")
    await server.start()
    return server


async def stop(server: grpc.aio.Server) -> None:
    await server.stop(GRACE_S)
