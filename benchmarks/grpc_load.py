"""A closed-loop load generator for the Open Inference Protocol over gRPC (``ModelInfer``), wrk's twin.

``run(target, request, connections, seconds)`` opens ``connections`` channels (each its own TCP
connection, so a server's workers share them as they share wrk's), and on each sends the same serialized
``ModelInferRequest`` again as soon as its answer is in. Requests go out and answers come back as bytes
(no protobuf work on the client per call), so the client's cost is grpc's own; the answers are checked
(status OK) and counted. Triton's ``perf_analyzer`` does not install here and ``ghz`` is not in the
registries; the same generator loads every server, so their figures compare with one another.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from benchmarks.wrk import WrkResult

METHOD = "/inference.GRPCInferenceService/ModelInfer"
# Without its own subchannel pool every channel to one target would share one TCP connection.
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def request_bytes(model: str, inputs: dict[str, Any]) -> bytes:
    """A ``ModelInferRequest`` for ``model`` with every input as raw contents (as Triton's client sends)."""
    import numpy as np

    from serving.grpc_v2 import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    for name, values in inputs.items():
        array = np.ascontiguousarray(np.asarray(values, dtype=np.float64).reshape(-1, 1))
        request.inputs.add(name=name, datatype="FP64", shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    return bytes(request.SerializeToString())


def outputs_of(answer: bytes) -> dict[str, Any]:
    """A ``ModelInferResponse``'s outputs as arrays, whether raw or typed contents carried them."""
    import numpy as np

    from serving.grpc_v2 import grpc_predict_v2_pb2 as pb

    response = pb.ModelInferResponse.FromString(answer)
    dtypes = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}
    typed = {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents",
             "INT32": "int_contents", "BOOL": "bool_contents"}  # fmt: skip
    found = {}
    for i, output in enumerate(response.outputs):
        values: np.ndarray
        if response.raw_output_contents:
            values = np.frombuffer(response.raw_output_contents[i], dtype=dtypes[output.datatype])
        else:
            values = np.asarray(getattr(output.contents, typed[output.datatype]))
        found[output.name] = values.reshape(list(output.shape))
    return found


def call(target: str, request: bytes, timeout_s: float = 60) -> bytes:
    """One ``ModelInfer`` call, its answer's bytes (raises ``grpc.RpcError`` on a refusal)."""
    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        answer = channel.unary_unary(METHOD)(request, timeout=timeout_s)
        return bytes(answer)


async def _load(target: str, request: bytes, connections: int, seconds: float) -> WrkResult:
    channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(connections)]
    calls = [c.unary_unary(METHOD) for c in channels]
    try:
        # connected and warm before the clock starts (a refusal here is counted again below)
        await asyncio.gather(*(infer(request, timeout=30) for infer in calls), return_exceptions=True)
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def loop(infer: Any) -> None:
            nonlocal errors
            while (sent := time.perf_counter()) < deadline:
                try:
                    await infer(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - sent)

        began = time.perf_counter()
        await asyncio.gather(*(loop(infer) for infer in calls))
        elapsed = time.perf_counter() - began
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    latencies.sort()
    return WrkResult(
        connections=connections,
        requests=len(latencies),
        seconds=elapsed,
        errors=errors,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
    )


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank); 0 for none."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run(target: str, request: bytes, connections: int, seconds: float) -> WrkResult:
    """``connections`` channels to ``target`` (``host:port``), each calling again as soon as answered."""
    return asyncio.run(_load(target, request, connections, seconds))
