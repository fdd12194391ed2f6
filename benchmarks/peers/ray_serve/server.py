"""Ray Serve peer: a FastAPI-ingress Serve deployment implementing Open Inference Protocol v2 REST (JSON)
over an onnxruntime session, on a single-node Ray started inside this process.

    python server.py --model model.onnx --name NAME --port PORT --workers N

``ray.init`` starts a local Ray (GCS, raylet, workers; no dashboard) with ``max(2, N)`` logical CPUs, then
``serve.start`` puts Serve's HTTP proxy on 127.0.0.1:PORT and ``serve.run`` deploys the application.
``--workers N`` maps to ``num_replicas=N``: N replica actors (a Ray worker process and one logical CPU each,
each with its own onnxruntime session: 1 intra-op, 1 inter-op thread); the proxy actor spreads requests
over them. ``/v2/health/ready`` is answered by a replica (so its model is loaded) and is 503 until
``serve.status()`` says the application is RUNNING (all N replicas up). Ray Serve has no binary tensor data
extension: JSON only.

SIGTERM/SIGINT: ``serve.shutdown(); ray.shutdown()`` (about 5 s). Ray's own processes share this process
group and block SIGINT, so SIGINT to the group is the clean stop; SIGTERM to the group also kills raylet and
agents directly, then the graceful part is cut at SHUTDOWN_GRACE_S and ray.shutdown() ends the rest (about
18 s in all). The replica, proxy and controller actors run in process groups of their own (same session): a
SIGKILL of this group alone leaves them behind. Ray also binds internal ports (random, plus its dashboard
agent's default 52365: when taken, the agent runs without its HTTP server) and leaves logs in
/tmp/ray/session_*.
"""

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats reporting (there is no network here)
# Under `uv run` (make bench-serving), Ray's default hook starts every worker with `uv run` in the caller's
# project, packaging its folder as the working directory: the replicas never came up within 180 s.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import numpy as np
import onnxruntime as ort
import ray
from fastapi import FastAPI, HTTPException, Request
from ray import serve
from ray.serve.config import HTTPOptions
from ray.serve.schema import LoggingConfig

DATATYPES = {"int64": "INT64", "float64": "FP64", "float32": "FP32", "int32": "INT32"}
SHUTDOWN_GRACE_S = 10.0  # serve.shutdown() takes about 5 s when Ray is intact
QUIET = LoggingConfig(log_level="WARNING", enable_access_log=False)

app = FastAPI()


@serve.deployment(logging_config=QUIET)
@serve.ingress(app)
class OnnxModel:
    def __init__(self, path: str, name: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.name = name

    @app.get("/v2/health/ready")
    def ready(self) -> dict[str, bool]:
        # this replica has its model; the application is ready once all of its replicas have theirs
        application = serve.status().applications.get(self.name)
        if application is None or application.status != "RUNNING":
            raise HTTPException(503, "not all replicas are up yet")
        return {"ready": True}

    @app.post("/v2/models/{model_name}/infer")
    async def infer(self, model_name: str, request: Request) -> dict[str, Any]:
        if model_name != self.name:
            raise HTTPException(404, f"no model {model_name}")
        body = await request.json()
        feeds = {
            t["name"]: np.asarray(t["data"], dtype=np.float64).reshape(t["shape"]) for t in body["inputs"]
        }
        results = self.session.run(self.outputs, feeds)
        return {
            "model_name": self.name,
            "id": body.get("id", ""),
            "outputs": [
                {
                    "name": n,
                    "shape": list(r.shape),
                    "datatype": DATATYPES[str(r.dtype)],
                    "data": r.ravel().tolist(),
                }
                for n, r in zip(self.outputs, results, strict=True)
            ],
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def handle_signals() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

    handle_signals()  # a signal during start-up stops the server once it is up
    ray.init(
        num_cpus=max(2, args.workers),  # each replica reserves one logical CPU
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    handle_signals()  # ray.init installs its own SIGTERM handler (sys.exit)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # this driver's own Serve client messages
    serve.start(http_options=HTTPOptions(host="127.0.0.1", port=args.port), logging_config=QUIET)
    serve.run(
        OnnxModel.options(num_replicas=args.workers).bind(str(Path(args.model).resolve()), args.name),
        name=args.name,
        logging_config=QUIET,
    )
    while not stop.wait(1.0):
        pass
    # Graceful Serve shutdown, bounded: when SIGTERM went to the whole process group, Ray's own processes
    # (raylet, agents) got it too and are gone, and serve.shutdown() would wait 30 s for a controller that
    # can no longer stop its replicas. ray.shutdown() then ends what is left (the actors exit with the node).
    graceful = threading.Thread(target=serve.shutdown, daemon=True)
    graceful.start()
    graceful.join(SHUTDOWN_GRACE_S)
    ray.shutdown()


if __name__ == "__main__":
    main()
