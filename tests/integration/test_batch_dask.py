"""Batch scoring past one machine: a Dask scheduler named by MLOPS_DASK_ADDRESS with two worker processes,
one killed mid-run. The lost file is scored again on the other worker; every row comes out exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from distributed import Client, LocalCluster

from flows.batch import batch_score_flow
from models import datasets
from tests.conftest import Registered, make_settings, settings_env, train_and_register

FILES, ROWS = 6, 150_000


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as running:
        yield running


@pytest.fixture
def champion_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None, split: datasets.Split
) -> Registered:
    settings = make_settings(tmp_path / "state")
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    return train_and_register(settings, split, "logistic_regression", promote_it=True)


def worker_pids(cluster: LocalCluster) -> list[int]:
    with Client(cluster) as client:  # type: ignore[no-untyped-call]
        return [int(pid) for pid in client.run(os.getpid).values()]


def kill_a_worker_mid_file(cluster: LocalCluster, killed: list[int]) -> None:
    """SIGKILL the first worker process seen writing an output file (it holds one open)."""
    pids = worker_pids(cluster)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                if any(".partial-" in f.path for f in psutil.Process(pid).open_files()):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
        time.sleep(0.01)


def test_a_worker_killed_mid_run_loses_no_row_and_duplicates_none(
    cluster: LocalCluster,
    champion_env: Registered,
    breast_cancer: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    rng = np.random.default_rng(0)
    for i in range(FILES):
        breast_cancer.iloc[rng.integers(0, len(breast_cancer), ROWS)].to_parquet(source / f"part-{i}.parquet")
    monkeypatch.setenv("MLOPS_DASK_ADDRESS", cluster.scheduler_address)
    killed: list[int] = []
    killer = threading.Thread(target=kill_a_worker_mid_file, args=(cluster, killed), daemon=True)
    killer.start()
    result = batch_score_flow(str(source), str(tmp_path / "out"), chunk_rows=20_000)
    killer.join(timeout=30)

    assert killed, "no worker was seen writing: the run ended before scoring began?"
    assert result["lost_attempts"], "the killed worker was not mid-file"
    assert result["rows"] == result["scored"] == FILES * ROWS
    scored = pd.read_parquet(tmp_path / "out", columns=["input_file", "row_number"])
    assert len(scored) == FILES * ROWS
    assert not scored.duplicated().any()
    assert sorted(scored.groupby("input_file").size()) == [ROWS] * FILES
    assert list((tmp_path / "out").rglob("*.partial-*")) == []  # the lost attempt's file removed
