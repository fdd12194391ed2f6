"""From data to a prediction over loopback from a real ``bentoml serve`` process."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from flows.deploy import LocalService, predict, served_version
from flows.pipeline import training_pipeline
from flows.traffic import plan_traffic, replay
from models import datasets
from models.settings import Settings
from serving.inference_log import read_records

pytestmark = pytest.mark.integration


@pytest.fixture
def service(flow_settings: Settings) -> Iterator[LocalService]:
    local = LocalService(flow_settings)
    try:
        yield local
    finally:
        local.stop()


def test_pipeline_deploys_and_the_real_service_answers(
    service: LocalService, split: datasets.Split, tmp_path: Path
) -> None:
    result = training_pipeline()
    assert result.served_url == service.url
    pid = service.pid()
    assert pid is not None
    assert httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"{service.url}/livez", timeout=5).status_code == 200
    assert "bentoml_service_request" in httpx.get(f"{service.url}/metrics", timeout=5).text

    records = datasets.records(split.holdout.head(5), datasets.BREAST_CANCER)
    body = predict(service.url, records)
    assert body["model_version"] == "1"
    assert body["run_id"] == result.run_id
    assert [p["label"] for p in body["predictions"]] == split.y_holdout.head(5).tolist()

    # the traffic generator replays held-out rows and keeps their labels for the monitor
    labels_path = tmp_path / "labels.csv"
    planned = plan_traffic(split.holdout, datasets.BREAST_CANCER, 30, [], None)
    assert replay(service.url, planned, datasets.BREAST_CANCER, labels_path, batch=3) == 10
    labels = pd.read_csv(labels_path)
    logged = {r["request_id"] for r in read_records(service.settings.inference_log_dir)}
    assert len(labels) == 30 and set(labels["request_id"]) <= logged

    bad = httpx.post(f"{service.url}/predict", json={"records": [{"mean_radius": 1.0}]}, timeout=5)
    assert bad.status_code == 400
    assert "missing features" in bad.text

    # a second, better-or-equal run becomes champion and the service moves to it
    second = training_pipeline()
    assert second.version == "2"
    assert served_version(service.url, service.settings.model_name) == "2"

    assert service.stop()
    assert service.pid() is None
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{service.url}/readyz", timeout=2)
