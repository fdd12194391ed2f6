"""The BentoML service over HTTP, in process, through ``to_asgi()``."""

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from models import datasets
from serving.service import ModelService
from tests.conftest import Registered, settings_env


@pytest.fixture(scope="module")
def client(champion: Registered) -> Iterator[TestClient]:
    """One app per module: BentoML registers its Prometheus metrics once per process."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings_env(champion.settings).items():
            patch.setenv(key, value)
        app = ModelService.to_asgi()  # type: ignore[attr-defined]  # bentoml.service wraps the class
        with TestClient(app) as test_client:
            yield test_client


def test_predict_one_record_names_model_version_and_run(
    client: TestClient, champion: Registered, split: datasets.Split
) -> None:
    record = datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)[0]
    response = client.post("/predict", json={"records": record})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == champion.settings.model_name
    assert body["model_version"] == champion.version
    assert body["run_id"] == champion.run_id
    assert len(body["request_id"]) == 32
    assert body["predictions"][0]["label"] in (0, 1)


def test_predict_a_batch(client: TestClient, split: datasets.Split) -> None:
    records = datasets.records(split.holdout.head(50), datasets.BREAST_CANCER)
    response = client.post("/predict", json={"records": records})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 50


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: {k: v for k, v in r.items() if k != "mean_area"}, "missing features ['mean_area']"),
        (lambda r: {**r, "mean_area": "large"}, "records[0].mean_area: expected a number, got str"),
        (lambda r: {**r, "shoe_size": 44}, "unknown features ['shoe_size']"),
    ],
)
def test_bad_records_get_a_400_naming_the_field(
    client: TestClient, split: datasets.Split, mutate, message
) -> None:
    record = datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)[0]
    response = client.post("/predict", json={"records": [mutate(record)]})
    assert response.status_code == 400
    assert message in response.text


def test_model_metadata(client: TestClient, champion: Registered) -> None:
    name = champion.settings.model_name
    response = client.get(f"/v2/models/{name}")
    assert response.status_code == 200
    body = response.json()
    assert body["versions"] == [champion.version]
    assert body["platform"] == "onnx"
    assert body["inputs"][0] == {"name": "mean_radius", "datatype": "FP64", "shape": [-1, 1]}
    assert [o["name"] for o in body["outputs"]] == ["label", "probabilities"]
    assert body["parameters"]["run_id"] == champion.run_id
    assert client.get("/v2/models/other").status_code == 404
