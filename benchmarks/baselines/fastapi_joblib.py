"""The naive baseline a user would write: FastAPI, ``joblib.load`` and ``model.predict`` in the handler.

MODEL_PATH=model.joblib uvicorn benchmarks.baselines.fastapi_joblib:app --port 8000
"""

from __future__ import annotations

import os
from typing import Any

import joblib
import pandas as pd
from fastapi import FastAPI

app = FastAPI()
model = joblib.load(os.environ["MODEL_PATH"])


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(body: dict[str, Any]) -> dict[str, Any]:
    records = body["records"]
    frame = pd.DataFrame([records] if isinstance(records, dict) else records)
    return {"predictions": model.predict(frame).tolist()}
