"""The gRPC transport in-process: a real ``grpc.aio`` server on a real data plane, Triton's client and the
protocol's own stub; the same answers, words and records as REST."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import orjson
import pytest
import tritonclient.grpc.aio as triton
from pydantic import SecretStr

from flows.processes import free_port
from models import datasets
from models.inference_records import read_records
from models.settings import Settings
from serving import grpc_server
from serving.dataplane import DataPlane, InvalidInput
from serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from serving.protocol import parse_infer_request
from tests.conftest import Registered
from tests.unit.serving.test_dataplane import make_plane

SPEC = datasets.BREAST_CANCER
T = TypeVar("T")


@pytest.fixture
def plane(champion: Registered, tmp_path: Path) -> Iterator[DataPlane]:
    made = make_plane(champion, tmp_path)
    yield made
    made.close()


def serve(plane: DataPlane, client: Callable[[str], Awaitable[T]], api_key: str | None = None) -> T:
    """Run ``client(address)`` against a gRPC server for ``plane`` on a free port; what it returned."""
    settings = plane_settings(api_key)

    async def run() -> T:
        server = await grpc_server.start(plane, settings)
        try:
            return await client(f"127.0.0.1:{settings.grpc_port}")
        finally:
            await grpc_server.stop(server)

    return asyncio.run(run())


def plane_settings(api_key: str | None = None) -> Settings:
    return Settings(grpc_port=free_port(), api_key=SecretStr(api_key) if api_key else None)


def typed_request(name: str, rows: list[dict[str, Any]], **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=name, **fields)
    for feature in SPEC.feature_names:
        tensor = request.inputs.add(name=feature, datatype="FP64", shape=[len(rows), 1])
        tensor.contents.fp64_contents.extend(float(r[feature]) for r in rows)
    return request


def raw_request(name: str, rows: list[dict[str, Any]], **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=name, **fields)
    for feature in SPEC.feature_names:
        request.inputs.add(name=feature, datatype="FP64", shape=[len(rows), 1])
        request.raw_input_contents.append(np.array([r[feature] for r in rows], "<f8").tobytes())
    return request


async def call(
    address: str, request: pb.ModelInferRequest, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[pb.ModelInferResponse, dict[str, str]]:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = stub(channel).ModelInfer(request, metadata=metadata)
        response = await answer
        return response, dict(await answer.trailing_metadata())


async def refusal(
    address: str, request: pb.ModelInferRequest, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(address, request, metadata)
    error = raised.value
    return error.code(), error.details() or "", dict(error.trailing_metadata() or ())


def stub(channel: grpc.aio.Channel) -> Any:
    return pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


def labels_of(response: pb.ModelInferResponse) -> list[int]:
    index = [o.name for o in response.outputs].index("label")
    if response.raw_output_contents:
        return [int(v) for v in np.frombuffer(response.raw_output_contents[index], "<i8")]
    return list(response.outputs[index].contents.int64_contents)


def test_tritons_client_gets_what_rest_answers_with_provenance(
    plane: DataPlane, champion: Registered, split: datasets.Split, tmp_path: Path
) -> None:
    rows = datasets.records(split.holdout.head(5), SPEC)
    name = champion.settings.model_name

    async def client(address: str) -> tuple[Any, ...]:
        async with triton.InferenceServerClient(address) as triton_client:
            inputs = []
            for feature in SPEC.feature_names:
                tensor = triton.InferInput(feature, [len(rows), 1], "FP64")
                tensor.set_data_from_numpy(np.array([[r[feature]] for r in rows], dtype=np.float64))
                inputs.append(tensor)
            live, ready = await triton_client.is_server_live(), await triton_client.is_server_ready()
            model_ready = await triton_client.is_model_ready(name)
            server = await triton_client.get_server_metadata(as_json=True)
            assert server["name"] == "mlops-path" and server["extensions"] == [
                "model_repository",
                "model_repository_metadata",
            ]
            assert not await triton_client.is_model_ready(name, "99")
            metadata = await triton_client.get_model_metadata(name, as_json=True)
            result = await triton_client.infer(
                name, inputs, request_id="t-1", headers={"x-request-id": "abc-1"}
            )
            return live, ready, model_ready, metadata, result

    live, ready, model_ready, metadata, result = serve(plane, client)
    assert live and ready and model_ready
    assert metadata["versions"] == [champion.version]
    assert [t["name"] for t in metadata["inputs"]] == list(SPEC.feature_names)
    assert result.as_numpy("label").ravel().tolist() == split.y_holdout.head(5).tolist()
    assert result.as_numpy("probabilities").shape == (5, 2)
    response = result.get_response(as_json=True)
    assert response["id"] == "t-1" and response["model_version"] == champion.version
    parameters = response["parameters"]
    assert parameters["request_id"]["string_param"] == "abc-1"
    assert parameters["run_id"]["string_param"] == champion.run_id
    assert parameters["logged"]["bool_param"] is True
    (record,) = read_records(tmp_path / "log")
    assert record["request_id"] == "abc-1" and record["route"] == "infer" and record["rows"] == 5


def test_typed_contents_are_answered_typed_and_raw_raw_with_the_same_values(
    plane: DataPlane, champion: Registered, split: datasets.Split
) -> None:
    rows = datasets.records(split.holdout.head(4), SPEC)
    name = champion.settings.model_name

    async def client(address: str) -> tuple[Any, ...]:
        return await call(address, typed_request(name, rows)), await call(address, raw_request(name, rows))

    (typed, typed_trailer), (raw, raw_trailer) = serve(plane, client)
    assert not typed.raw_output_contents and len(raw.raw_output_contents) == 2
    assert labels_of(typed) == labels_of(raw) == split.y_holdout.head(4).tolist()
    probabilities = list(typed.outputs[1].contents.fp32_contents or typed.outputs[1].contents.fp64_contents)
    assert len(probabilities) == 8
    for trailer in (typed_trailer, raw_trailer):
        assert trailer["x-model-version"] == champion.version and trailer["x-run-id"] == champion.run_id
    assert typed_trailer["x-request-id"] != raw_trailer["x-request-id"]


def test_requested_outputs_only(plane: DataPlane, champion: Registered, split: datasets.Split) -> None:
    rows = datasets.records(split.holdout.head(2), SPEC)
    request = typed_request(champion.settings.model_name, rows, outputs=[{"name": "label"}])
    response, _ = serve(plane, lambda address: call(address, request))
    assert [o.name for o in response.outputs] == ["label"]


def test_refusals_are_status_codes_with_rests_words_and_recorded(
    plane: DataPlane, champion: Registered, split: datasets.Split, tmp_path: Path
) -> None:
    rows = datasets.records(split.holdout.head(2), SPEC)
    name = champion.settings.model_name
    renamed = typed_request(name, rows)
    renamed.inputs[0].name = "nope"
    short = typed_request(name, rows)
    del short.inputs[3].contents.fp64_contents[1]
    uneven = raw_request(name, rows)
    del uneven.raw_input_contents[-1]
    nan = raw_request(name, rows)
    nan.raw_input_contents[0] = np.array([1.0, np.nan], "<f8").tobytes()

    async def client(address: str) -> list[tuple[grpc.StatusCode, str, dict[str, str]]]:
        return [
            await refusal(address, renamed, (("x-request-id", "mine-1"),)),
            await refusal(address, short),
            await refusal(address, uneven),
            await refusal(address, nan),
            await refusal(address, typed_request("other-model", rows)),
            await refusal(address, typed_request(name, rows, model_version="99")),
        ]

    refused = serve(plane, client)
    assert {code for code, _, _ in refused[:4]} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert {code for code, _, _ in refused[4:]} == {grpc.StatusCode.NOT_FOUND}
    assert refused[0][1].startswith("inputs[0].name: unknown input 'nope'")
    assert refused[0][2]["x-request-id"] == "mine-1"
    assert refused[1][1] == "inputs[3].data: expected 2 values for shape [2, 1], got 1"
    assert refused[2][1] == "raw_input_contents: expected one per input (30), got 29"
    assert refused[3][1] == "inputs[0].data[1]: expected a finite number, got nan"
    assert "version: '99' of 'breast-cancer-classifier' is not registered" in refused[5][1]
    # REST's words for the same request, through the same parse
    body, binary = grpc_server.request_body(short)
    with pytest.raises(ValueError, match=r"^inputs\[3\]\.data: expected 2 values"):
        parse_infer_request(body, plane.current().inputs, binary)
    errors = [r for r in read_records(tmp_path / "log") if r.get("status")]
    assert [(e["status"], e["route"]) for e in errors] == [(400, "infer")] * 4  # a 404 is not the model's
    assert errors[0]["request_id"] == "mine-1"


def test_the_api_key_guards_model_infer_only(
    plane: DataPlane, champion: Registered, split: datasets.Split
) -> None:
    rows = datasets.records(split.holdout.head(1), SPEC)
    request = raw_request(champion.settings.model_name, rows)

    async def client(address: str) -> tuple[Any, ...]:
        missing = await refusal(address, request)
        wrong = await refusal(address, request, (("authorization", "Bearer nope"),))
        answered, _ = await call(address, request, (("authorization", "Bearer s3cret"),))
        async with grpc.aio.insecure_channel(address) as channel:
            ready = await stub(channel).ServerReady(pb.ServerReadyRequest())
        return missing, wrong, answered, ready

    missing, wrong, answered, ready = serve(plane, client, api_key="s3cret")
    assert missing[0] == wrong[0] == grpc.StatusCode.UNAUTHENTICATED
    assert missing[1].startswith("authorization: missing API key") and "invalid" in wrong[1]
    assert labels_of(answered) == split.y_holdout.head(1).tolist() and ready.ready


def test_not_loaded_is_unavailable(champion: Registered, split: datasets.Split, tmp_path: Path) -> None:
    plane = make_plane(champion, tmp_path, loaded=False)
    rows = datasets.records(split.holdout.head(1), SPEC)

    async def client(address: str) -> tuple[Any, ...]:
        async with grpc.aio.insecure_channel(address) as channel:
            ready = await stub(channel).ServerReady(pb.ServerReadyRequest())
        return ready, await refusal(address, typed_request(champion.settings.model_name, rows))

    try:
        ready, (code, details, _) = serve(plane, client)
    finally:
        plane.close()
    assert not ready.ready and code == grpc.StatusCode.UNAVAILABLE and details.startswith("model: not loaded")


def test_typed_and_raw_requests_read_as_the_rest_body_reads() -> None:
    rows = [{f: float(i + j) for j, f in enumerate(SPEC.feature_names)} for i in range(3)]
    rest = {
        "inputs": [
            {"name": f, "shape": [3, 1], "datatype": "FP64", "data": [r[f] for r in rows]}
            for f in SPEC.feature_names
        ]
    }
    typed_body, typed_binary = grpc_server.request_body(typed_request("m", rows, id="x"))
    raw_body, raw_binary = grpc_server.request_body(raw_request("m", rows))
    assert typed_binary == b"" and typed_body == {**rest, "id": "x"}
    assert len(raw_binary) == 30 * 3 * 8
    assert orjson.dumps([t["parameters"] for t in raw_body["inputs"]]) == orjson.dumps(
        [{"binary_data_size": 24}] * 30
    )


def test_bytes_contents_must_be_text() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="city", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\xff")
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.contents\.bytes_contents: expected UTF-8"):
        grpc_server.request_body(request)
