import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sklearn.pipeline import Pipeline

from models import datasets
from models.features import InputError
from serving.model import (
    LoadedModel,
    ModelRef,
    ModelUnavailableError,
    fetch,
    fetch_golden,
    load_alias,
    resolve,
)
from tests.conftest import Registered


def test_resolve_follows_the_champion_alias(champion: Registered) -> None:
    settings = champion.settings
    ref = resolve(settings.resolved_tracking_uri, settings.model_name)
    assert (ref.version, ref.run_id) == (champion.version, champion.run_id)
    assert ref.onnx_uri.startswith("models:/")


def test_missing_alias_or_model_is_unavailable(champion: Registered) -> None:
    settings = champion.settings
    with pytest.raises(ModelUnavailableError, match="nope@champion"):
        resolve(settings.resolved_tracking_uri, "nope")
    with pytest.raises(ModelUnavailableError, match="challenger-x"):
        resolve(settings.resolved_tracking_uri, settings.model_name, alias="challenger-x")


def test_fetch_caches_the_onnx_file(champion: Registered) -> None:
    settings = champion.settings
    ref = resolve(settings.resolved_tracking_uri, settings.model_name)
    path = fetch(ref, settings.model_cache_dir)
    assert path.suffix == ".onnx" and path.is_file()
    mtime = path.stat().st_mtime_ns
    assert fetch(ref, settings.model_cache_dir) == path
    assert path.stat().st_mtime_ns == mtime


def test_loaded_model_predicts_like_scikit_learn(
    champion: Registered, split: datasets.Split, fitted: Pipeline
) -> None:
    settings = champion.settings
    model = load_alias(settings.resolved_tracking_uri, settings.model_name, settings.model_cache_dir)
    assert isinstance(model, LoadedModel)
    assert [t.name for t in model.inputs] == datasets.BREAST_CANCER.feature_names
    assert model.classes == (0, 1)
    rows = split.holdout.head(20)
    predictions = model.predict(datasets.records(rows, datasets.BREAST_CANCER))
    assert [p["label"] for p in predictions] == fitted.predict(
        rows[datasets.BREAST_CANCER.feature_names]
    ).tolist()
    expected = fitted.predict_proba(rows[datasets.BREAST_CANCER.feature_names])
    for prediction, row in zip(predictions, expected, strict=True):
        assert list(prediction["probabilities"]) == ["0", "1"]
        assert list(prediction["probabilities"].values()) == pytest.approx(row.tolist(), abs=1e-9)


def test_loaded_model_refuses_bad_records(champion: Registered, split: datasets.Split) -> None:
    settings = champion.settings
    model = load_alias(settings.resolved_tracking_uri, settings.model_name, settings.model_cache_dir)
    record = datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)[0]
    with pytest.raises(InputError, match="missing features \\['mean_radius'\\]"):
        model.predict([{k: v for k, v in record.items() if k != "mean_radius"}])


def test_workers_fetching_one_version_at_once_never_read_a_half_written_file(tmp_path: Path) -> None:
    """The service's workers share the cache: each must read complete files, whoever downloads them."""
    store = tmp_path / "store"
    (store / "golden").mkdir(parents=True)
    (store / "onnx").mkdir()
    golden = {"rows": [[float(i)] * 30 for i in range(40_000)]}  # a few MiB: copying takes a while
    (store / "golden" / "golden.json").write_text(json.dumps(golden))
    (store / "onnx" / "model.onnx").write_bytes(b"\0" * 8_000_000)
    ref = ModelRef(
        name="m",
        version="1",
        run_id="r",
        onnx_uri="models:/m/1",
        artifact_uri=(store / "onnx").as_uri(),
        golden_uri=(store / "golden" / "golden.json").as_uri(),
    )
    for attempt in range(3):
        cache = tmp_path / f"cache{attempt}"
        start = threading.Barrier(6)

        def worker(cache: Path = cache, start: threading.Barrier = start) -> tuple[dict[str, Any], int]:
            start.wait()
            return fetch_golden(ref, cache), fetch(ref, cache).stat().st_size

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: worker(), range(6)))
        assert all(found == golden and size == 8_000_000 for found, size in results)
        assert sorted(p.name for p in (cache / "m" / "1").iterdir()) == ["golden", "onnx"]  # no partials


def test_a_cache_folder_left_incomplete_by_an_earlier_release_is_fetched_again(champion: Registered) -> None:
    settings = champion.settings
    ref = resolve(settings.resolved_tracking_uri, settings.model_name)
    cache = settings.model_cache_dir.parent / "old-cache"
    (cache / ref.name / ref.version / "onnx").mkdir(parents=True)  # an earlier download that failed midway
    (cache / ref.name / ref.version / "golden").mkdir()
    assert fetch(ref, cache).suffix == ".onnx"
    assert fetch_golden(ref, cache)
    assert sorted(p.name for p in (cache / ref.name / ref.version).iterdir()) == ["golden", "onnx"]
