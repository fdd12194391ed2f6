"""The server a user would write by hand: FastAPI + onnxruntime, Open Inference Protocol v2 JSON, uvloop.

    python server.py --model model.onnx --name NAME --port PORT --workers N

No provenance, no inference log, no input checks beyond what numpy refuses: the floor an MLOps serving
layer is compared to. uvicorn's ``--workers`` processes share the listening socket.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException, Request

DATATYPES = {"int64": "INT64", "float64": "FP64", "float32": "FP32", "int32": "INT32"}


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def make_app() -> FastAPI:
    name = os.environ["PEER_MODEL_NAME"]
    model = session(os.environ["PEER_MODEL_PATH"])
    outputs = [o.name for o in model.get_outputs()]
    app = FastAPI()

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{model_name}/infer")
    async def infer(model_name: str, request: Request) -> dict[str, Any]:
        if model_name != name:
            raise HTTPException(404, f"no model {model_name}")
        body = await request.json()
        feeds = {
            t["name"]: np.asarray(t["data"], dtype=np.float64).reshape(t["shape"]) for t in body["inputs"]
        }
        results = model.run(outputs, feeds)
        return {
            "model_name": name,
            "id": body.get("id", ""),
            "outputs": [
                {
                    "name": n,
                    "shape": list(r.shape),
                    "datatype": DATATYPES[str(r.dtype)],
                    "data": r.ravel().tolist(),
                }
                for n, r in zip(outputs, results, strict=True)
            ],
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ["PEER_MODEL_PATH"], os.environ["PEER_MODEL_NAME"] = args.model, args.name
    uvicorn.run(
        "server:make_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
