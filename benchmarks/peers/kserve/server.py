"""KServe peer: KServe 0.21's ``ModelServer`` with a custom ``kserve.Model`` over an onnxruntime session.

    python server.py --model model.onnx --name NAME --port PORT --workers N [--grpc-port G]

The way KServe's documentation writes a custom predictor: ``load()`` opens the model, ``predict()`` takes the
v2 ``InferRequest`` (JSON, or the binary tensor data extension) and returns an ``InferResponse``, which must
carry an id or KServe answers 500. ``--workers N`` is KServe's own multi-process REST server: the parent
binds the socket and spawns N uvicorn processes, pickling the model into each, so the onnxruntime session
(which does not pickle) is opened again in every worker as it is unpickled.

KServe binds REST on 0.0.0.0 and gRPC on [::] with no setting for either address; this script narrows both to
127.0.0.1 (the config KServe builds is given the host; its gRPC server's port is added on the loopback).
gRPC (KServe's own ``GRPCInferenceService``, in the parent process whatever ``--workers`` says) is on with
``--grpc-port``, off without it.
"""

from __future__ import annotations

import argparse
import logging
from types import SimpleNamespace
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse

DATATYPES = {"int64": "INT64", "float64": "FP64", "float32": "FP32", "int32": "INT32"}


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class LoopbackConfig(uvicorn.Config):
    """uvicorn's config bound to 127.0.0.1 whatever host it is given (module level: KServe pickles it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "host": "127.0.0.1"})


def loopback_only() -> None:
    """KServe hard-codes host="0.0.0.0" in the uvicorn config of its REST server and "[::]" as its gRPC
    server's address: bind 127.0.0.1 instead."""
    from kserve.protocol.grpc import server as grpc_server
    from kserve.protocol.rest import server as rest

    rest.uvicorn.Config = LoopbackConfig  # type: ignore[misc]
    make_server = grpc_server.aio.server

    def loopback_server(*args: Any, **kwargs: Any) -> Any:
        server = make_server(*args, **kwargs)
        add_port = server.add_insecure_port
        server.add_insecure_port = lambda address: add_port(address.replace("[::]", "127.0.0.1"))
        return server

    grpc_server.aio = SimpleNamespace(server=loopback_server)  # the only name of grpc.aio it uses


class OnnxModel(kserve.Model):
    """One model over one onnxruntime session (opened again in each worker process as it is unpickled)."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None
        self.outputs: list[str] = []
        self.load()

    def load(self) -> bool:
        self.session = session(self.path)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "session": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.load()

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        assert self.session is not None
        feeds = {i.name: i.as_numpy().astype(np.float64, copy=False) for i in payload.inputs}
        results = self.session.run(self.outputs, feeds)
        outputs = []
        for output_name, result in zip(self.outputs, results, strict=True):
            output = InferOutput(output_name, list(result.shape), DATATYPES[str(result.dtype)])
            output.set_data_from_numpy(result, binary_data=payload.use_binary_outputs)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or "none",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--grpc-port", type=int)
    args, _ = parser.parse_known_args()
    logging.basicConfig(level=logging.WARNING)
    loopback_only()
    logging.getLogger("kserve").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    grpc = {"enable_grpc": True, "grpc_port": args.grpc_port} if args.grpc_port else {"enable_grpc": False}
    server = kserve.ModelServer(http_port=args.port, workers=args.workers, **grpc)
    server.start([OnnxModel(args.name, args.model)])


if __name__ == "__main__":
    main()
