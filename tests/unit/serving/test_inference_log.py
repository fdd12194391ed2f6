"""The inference log: complete under concurrent writers, rotated, readable after a restart."""

import threading
from pathlib import Path

import numpy as np
import pytest

from models.inference_records import iter_rows, read_records, segments
from serving.inference_log import InferenceLog, InferenceLogError


def write(log: InferenceLog, request_id: str, rows: int = 2, version: str = "1") -> None:
    log.write(
        request_id=request_id,
        model="m",
        version=version,
        run_id="r",
        route="predict",
        latency_ms=0.5,
        inputs={
            "a": np.arange(rows, dtype=float).reshape(-1, 1),
            "c": np.array([["x"]] * rows, dtype=object),
        },
        outputs={"label": np.ones((rows, 1), dtype=np.int64), "probabilities": np.full((rows, 2), 0.5)},
        rows=rows,
    )


def test_records_round_trip_and_flatten_to_rows(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path, worker="1")
    write(log, "req-a", rows=3)
    (record,) = read_records(tmp_path)
    assert record["request_id"] == "req-a" and record["rows"] == 3
    assert record["inputs"] == {"a": [0.0, 1.0, 2.0], "c": ["x", "x", "x"]}
    assert record["outputs"]["probabilities"] == [[0.5, 0.5]] * 3
    rows = list(iter_rows(read_records(tmp_path)))
    assert [r["row"] for r in rows] == [0, 1, 2]
    assert rows[2]["inputs"] == {"a": 2.0, "c": "x"} and rows[2]["outputs"]["label"] == 1


def test_concurrent_writers_in_threads_and_workers_lose_nothing(tmp_path: Path) -> None:
    logs = [InferenceLog(tmp_path, worker=str(w), max_bytes=4096) for w in range(3)]

    def hammer(log: InferenceLog, prefix: str) -> None:
        for i in range(300):
            write(log, f"{prefix}-{i}")

    threads = [
        threading.Thread(target=hammer, args=(log, f"w{n}t{t}"))
        for n, log in enumerate(logs)
        for t in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [r["request_id"] for r in read_records(tmp_path)]
    assert len(ids) == len(set(ids)) == 3 * 3 * 300
    assert len(segments(tmp_path)) > 3  # rotated by size
    assert sum(log.written for log in logs) == len(ids)


def test_a_restart_appends_new_segments_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    first = InferenceLog(tmp_path, worker="1")
    write(first, "before")
    first.close()
    with segments(tmp_path)[0].open("ab") as handle:
        handle.write(b'{"request_id": "torn", "ts"')  # a writer killed mid-line
    second = InferenceLog(tmp_path, worker="1")
    second._started = "99999999T999999"  # a later start
    write(second, "after")
    assert [r["request_id"] for r in read_records(tmp_path)] == ["before", "after"]


def test_filters_by_time_and_version(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path, worker="1")
    write(log, "one", version="1")
    write(log, "two", version="2")
    records = list(read_records(tmp_path))
    assert [r["request_id"] for r in read_records(tmp_path, version="2")] == ["two"]
    assert [r["request_id"] for r in read_records(tmp_path, since=records[1]["ts"])] == ["two"]
    assert [r["request_id"] for r in read_records(tmp_path, until=records[1]["ts"])] == ["one"]


def test_an_unwritable_folder_raises_and_is_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    log = InferenceLog(blocker / "log", worker="1")
    with pytest.raises(InferenceLogError):
        write(log, "x")
    assert (log.written, log.failed) == (0, 1)


def test_inputs_encoded_ahead_are_written_as_the_same_record(tmp_path: Path) -> None:
    inputs = {"a": np.arange(3, dtype=float).reshape(-1, 1), "c": np.array([["x"]] * 3, dtype=object)}
    outputs = {"label": np.ones((3, 1), dtype=np.int64)}
    log = InferenceLog(tmp_path, worker="1")
    fields = {"model": "m", "version": "1", "run_id": "r", "route": "infer", "latency_ms": 1.0, "rows": 3}
    log.write(request_id="plain", inputs=inputs, outputs=outputs, **fields)  # type: ignore[arg-type]
    log.write(request_id="ahead", inputs=log.encode(inputs), outputs=outputs, **fields)  # type: ignore[arg-type]
    plain, ahead = read_records(tmp_path)
    assert ahead["inputs"] == plain["inputs"] == {"a": [0.0, 1.0, 2.0], "c": ["x", "x", "x"]}
