"""NVIDIA PyTriton peer: Triton Inference Server (2.51, bundled by nvidia-pytriton 0.7) on CPU, serving an
onnxruntime session from a Python ``@batch`` inference function behind Triton's dynamic batcher.

    python server.py --model model.onnx --name NAME --port PORT --workers N [--grpc-port G]

(the venv must be made from Debian's ``/usr/bin/python3.11``: the Python backend stub links its libpython.)

Triton itself speaks the Open Inference Protocol v2 (KServe v2) REST on 127.0.0.1:PORT, including the binary
tensor data extension, and its gRPC service (``inference.GRPCInferenceService``) on 127.0.0.1:G (a free port
when not given). Its metrics endpoint is required by Triton and bound to another free 127.0.0.1 port.
``/v2/health/ready`` is Triton's strict readiness: the model is bound into a local model store before Triton
starts, so Triton loads it at start-up and is not ready before it is.

``--workers N`` maps to N Triton model instances (``instance_group`` count N on CPU): ``triton.bind`` gets a
list of N inference callables, each with its own onnxruntime session (1 intra-op, 1 inter-op thread). Triton
runs one Python-backend stub process per instance; the stubs hand each (dynamically batched) request to this
process over shared memory/ZeroMQ, where each instance's callable runs in its own thread (onnxruntime releases
the GIL while it computes).

Outputs: ``probabilities`` FP64 [rows, 2] and ``label`` INT64 [rows, 1] (a batching Triton model's outputs
carry a per-row shape of at least one dimension, so ONNX's [rows] label gains a trailing 1).

pytriton copies Triton into a workspace under ~/.cache/pytriton (removed on stop). Triton prints its start-up
banner and shutdown lines (INFO) on stdout: pytriton's TritonConfig has no switch for Triton's --log-info;
nothing is logged per request.
"""

import argparse
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy

MAX_BATCH_SIZE = 4096  # the benchmark sends requests of up to 1,000 rows; Triton refuses a request above this
DTYPES = {"tensor(double)": np.float64, "tensor(float)": np.float32, "tensor(int64)": np.int64}


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def make_infer_func(path: str) -> Callable:
    """One model instance's inference callable, holding its own onnxruntime session."""
    model = session(path)
    outputs = [o.name for o in model.get_outputs()]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        results = dict(zip(outputs, model.run(outputs, inputs), strict=True))
        # one row per batch entry: [rows] -> [rows, 1]; [rows, 2] stays
        return {n: r.reshape(len(r), -1) for n, r in results.items()}

    return infer


def tensors(args: list[ort.NodeArg]) -> list[Tensor]:
    """Triton tensor specs of ONNX inputs/outputs: the batch dimension dropped, at least one left."""
    return [Tensor(name=a.name, dtype=DTYPES[a.type], shape=tuple(a.shape[1:]) or (1,)) for a in args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM behaves like Ctrl+C: Triton.serve() catches KeyboardInterrupt and stops Triton cleanly."""
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--grpc-port", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    probe = session(args.model)
    inputs, outputs = tensors(probe.get_inputs()), tensors(probe.get_outputs())
    del probe

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port or free_port(),
        metrics_address="127.0.0.1",
        metrics_port=free_port(),
        log_verbose=0,
    )
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    # Bind into a local model store first, then start Triton on it (pytriton's documented lifecycle policy
    # for "prepare the model, then start the server"): Triton loads the model at start-up, so its strict
    # /v2/health/ready is not 200 before the model is. The default policy starts an empty Triton and loads
    # the model over the repository API afterwards: the empty server briefly answers ready in between.
    policy = TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True)
    with Triton(config=config, triton_lifecycle_policy=policy) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=[make_infer_func(args.model) for _ in range(args.workers)],
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(max_batch_size=MAX_BATCH_SIZE, batcher=DynamicBatcher()),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
