"""The data plane without a transport: answers, domain errors and the one place refusals are recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from models import datasets
from models.inference_records import read_records
from serving.dataplane import DataPlane, InvalidInput, ModelNotFound, ModelNotReady
from serving.inference_log import InferenceLog
from serving.repository import Repository
from tests.conftest import Registered

SPEC = datasets.BREAST_CANCER


def make_plane(champion: Registered, tmp_path: Path, loaded: bool = True) -> DataPlane:
    settings = champion.settings
    repository = Repository(settings.resolved_tracking_uri, (settings.model_name,), tmp_path / "cache", 60)
    if loaded:
        assert repository.check()
    return DataPlane(repository, InferenceLog(tmp_path / "log", worker="test"))


@pytest.fixture
def plane(champion: Registered, tmp_path: Path) -> Iterator[DataPlane]:
    made = make_plane(champion, tmp_path)
    yield made
    made.close()


def infer_body(rows: list[dict[str, float | str]], outputs: list[str] | None = None) -> bytes:
    body: dict[str, object] = {
        "id": "r-1",
        "inputs": [
            {"name": n, "shape": [len(rows), 1], "datatype": "FP64", "data": [r[n] for r in rows]}
            for n in SPEC.feature_names
        ],
    }
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return orjson.dumps(body)


def test_infer_answers_with_provenance_and_records_it(
    plane: DataPlane, champion: Registered, split: datasets.Split, tmp_path: Path
) -> None:
    rows = datasets.records(split.holdout.head(3), SPEC)
    name = champion.settings.model_name
    answer = asyncio.run(plane.infer(name, champion.version, infer_body(rows, ["label"]), None, probe=True))
    assert answer.id == "r-1" and answer.logged and answer.wanted == ("label",)
    assert answer.provenance == {
        "request_id": answer.request_id,
        "model_version": champion.version,
        "run_id": champion.run_id,
    }
    ((output_name, labels),) = answer.chosen()
    assert output_name == "label" and np.ravel(labels).tolist() == split.y_holdout.head(3).tolist()
    (record,) = read_records(tmp_path / "log")
    assert record["request_id"] == answer.request_id and record["route"] == "infer"
    assert record["rows"] == 3 and record["probe"] is True


def test_predict_and_predict_rows_answer_the_same(plane: DataPlane, split: datasets.Split) -> None:
    rows = datasets.records(split.holdout.head(4), SPEC)
    answer, predictions = asyncio.run(plane.predict(orjson.dumps({"records": rows}), probe=False))
    batched = plane.predict_rows(rows)
    assert [p["label"] for p in predictions] == [p["label"] for p in batched]
    assert [p["row"] for p in batched] == [0, 1, 2, 3]
    assert {p["model_version"] for p in batched} == {answer.model.ref.version}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "body: invalid JSON"),
        (b"[]", "expected a JSON object with 'records'"),
        (b'{"records": 3}', "records: expected an object of named features"),
        (b'{"records": [{"mean_radius": 1.0}]}', "missing features"),
    ],
)
def test_bad_predict_bodies_raise_invalid_input(plane: DataPlane, body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        asyncio.run(plane.predict(body, probe=False))


def test_wrong_model_version_or_outputs_and_not_ready_are_domain_errors(
    plane: DataPlane, champion: Registered, split: datasets.Split, tmp_path: Path
) -> None:
    name, rows = champion.settings.model_name, datasets.records(split.holdout.head(1), SPEC)
    with pytest.raises(ModelNotFound, match="'other' is not served here"):
        asyncio.run(plane.model_metadata("other"))
    with pytest.raises(ModelNotFound, match=r"version: '999' of .* is not registered"):
        asyncio.run(plane.infer(name, "999", infer_body(rows), None, probe=False))
    with pytest.raises(InvalidInput, match=r"outputs: unknown \['score'\]"):
        asyncio.run(plane.infer(name, None, infer_body(rows, ["score"]), None, probe=False))
    starting = make_plane(champion, tmp_path / "starting", loaded=False)
    assert not starting.ready
    with pytest.raises(ModelNotReady, match="not loaded yet"):
        asyncio.run(starting.predict(b'{"records": []}', probe=False))
    assert list(read_records(tmp_path / "log")) == []  # errors raised here are recorded by refuse()


def test_a_refusal_is_one_record_naming_status_and_version(
    plane: DataPlane, champion: Registered, tmp_path: Path
) -> None:
    request_id = plane.refuse("/predict", 401, "authorization: missing API key")
    assert plane.refuse("/predict", 413, "body: too large", request_id="given") == "given"
    first, second = read_records(tmp_path / "log")
    assert (first["request_id"], first["status"], first["version"]) == (request_id, 401, champion.version)
    assert first["rows"] == 0 and first["error"] == "authorization: missing API key"
    assert (second["request_id"], second["status"]) == ("given", 413)
