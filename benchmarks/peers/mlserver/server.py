"""MLServer peer: MLServer 1.7 (Seldon) serving a custom onnxruntime runtime (``runtime.py``).

    python server.py --model model.onnx --name NAME --port PORT --workers N

Writes MLServer's two settings files (``settings.json``, ``model-settings.json``) into a folder beside the
model and runs ``mlserver start`` on it, as a user would. MLServer's REST front end is one process; its
``parallel_workers`` setting runs inference in a pool of worker processes. ``--workers 1`` is MLServer's
single-process setup (``parallel_workers: 0``, inference in the front end's process, its fastest for a small
model); ``--workers N`` above 1 is a pool of N. REST and gRPC bind 127.0.0.1 (gRPC on a free port: MLServer
always starts it); the metrics server is off.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    folder = Path(args.model).resolve().parent / f"mlserver-{args.port}"
    folder.mkdir(exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": args.port,
        "grpc_port": free_port(),
        "metrics_endpoint": None,
        "parallel_workers": args.workers if args.workers > 1 else 0,
        "debug": False,
    }
    model = {
        "name": args.name,
        "implementation": "runtime.OnnxRuntime",
        "parameters": {"uri": str(Path(args.model).resolve())},
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}  # the runtime's module, for the front end and its workers
    mlserver = Path(sys.executable).parent / "mlserver"
    os.execve(mlserver, [str(mlserver), "start", str(folder)], env)


if __name__ == "__main__":
    main()
