"""Run by test_startup.py in its own process: the service app with whatever registry the env points at."""

import sys
import time

from starlette.testclient import TestClient

from serving.service import ModelService

with TestClient(ModelService.to_asgi()) as client:  # type: ignore[attr-defined]
    print("readyz", client.get("/readyz").status_code, flush=True)
    print("v2-ready", client.get("/v2/health/ready").status_code, flush=True)
    print("predict", client.post("/predict", json={"records": {"a": 1}}).status_code, flush=True)
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    print("readyz-later", client.get("/readyz").status_code, flush=True)
    training = ("sklearn", "prefect", "skl2onnx", "mlflow", "pandas")
    heavy = sorted(name for name in training if name in sys.modules)
    print("imported", ",".join(heavy) or "none", flush=True)
