"""The gRPC load generator against a real gRPC server: what it sends, counts and decodes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from benchmarks import grpc_load
from serving.grpc_v2 import grpc_predict_v2_pb2 as pb


class Echo:
    """``ModelInfer`` answering each input back as an output (raw when asked raw, typed otherwise);
    refuses a model named ``refuse``; remembers the connections it was called on."""

    def __init__(self) -> None:
        self.peers: set[str] = set()
        self.lock = threading.Lock()

    def infer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.peers.add(context.peer())
        parsed = pb.ModelInferRequest.FromString(request)
        if parsed.model_name == "refuse":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")
        answer = pb.ModelInferResponse(model_name=parsed.model_name)
        for i, tensor in enumerate(parsed.inputs):
            output = answer.outputs.add(name=tensor.name, datatype="FP64", shape=tensor.shape)
            if parsed.raw_input_contents:
                answer.raw_output_contents.append(parsed.raw_input_contents[i])
            else:
                output.contents.fp64_contents.extend(tensor.contents.fp64_contents)
        return bytes(answer.SerializeToString())


@pytest.fixture
def echo() -> Iterator[tuple[str, Echo]]:
    handler = Echo()
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    method = grpc.unary_unary_rpc_method_handler(handler.infer)  # bytes in, bytes out
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": method})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", handler
    finally:
        server.stop(grace=None)


def test_requests_carry_raw_float64_columns_and_answers_decode_back() -> None:
    request = pb.ModelInferRequest.FromString(grpc_load.request_bytes("m", {"a": [1.5, 2.0], "b": [3]}))
    assert request.model_name == "m"
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("a", "FP64", [2, 1]),
        ("b", "FP64", [1, 1]),
    ]
    assert np.frombuffer(request.raw_input_contents[0], np.float64).tolist() == [1.5, 2.0]


def test_the_load_counts_answers_and_refusals_on_one_connection_per_channel(
    echo: tuple[str, Echo],
) -> None:
    target, handler = echo
    body = grpc_load.request_bytes("m", {"x": [0.25, 0.5, 0.75]})
    decoded = grpc_load.outputs_of(grpc_load.call(target, body))
    assert decoded["x"].tolist() == [[0.25], [0.5], [0.75]]

    handler.peers.clear()
    result = grpc_load.run(target, body, 4, 0.5)
    assert result.requests > 20 and result.errors == 0
    assert 0 < result.p50_ms <= result.p99_ms
    assert len(handler.peers) == 4  # four TCP connections, not four streams on one

    refused = grpc_load.run(target, grpc_load.request_bytes("refuse", {"x": [1.0]}), 2, 0.3)
    assert refused.requests > 0 and refused.errors == refused.requests


def test_typed_answers_decode_as_raw_ones_do(echo: tuple[str, Echo]) -> None:
    target, _ = echo
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="x", datatype="FP64", shape=[2, 1]).contents.fp64_contents.extend([1.0, 2.0])
    decoded = grpc_load.outputs_of(grpc_load.call(target, typed.SerializeToString()))
    assert decoded["x"].tolist() == [[1.0], [2.0]]


def test_percentiles_are_nearest_rank() -> None:
    ordered = [float(i) for i in range(1, 101)]
    assert grpc_load.percentile(ordered, 0.5) == 50.0
    assert grpc_load.percentile(ordered, 0.99) == 99.0
    assert grpc_load.percentile([], 0.99) == 0.0
