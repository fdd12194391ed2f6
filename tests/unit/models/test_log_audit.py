"""The chained log: every tampering (edit, delete, reorder, truncate, extend, a segment gone, the manifest
edited) is named by ``verify``; compaction keeps the chain checkable and readable; retention records what
it deletes."""

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from models import log_audit
from models.inference_records import COMPACTED_SUFFIX, read_records, segments
from models.log_chain import MANIFEST, genesis, line_hash, read_manifest
from serving.inference_log import InferenceLog


def written_log(directory: Path, records: int = 12, ts: float | None = None) -> list[Path]:
    """A real writer's log: two sealed segments (rotated, then closed)."""
    log = InferenceLog(directory, worker="1", max_bytes=2500)
    for i in range(records):
        log.write(request_id=f"req-{i}", model="m", version="1", run_id="r", route="predict",
                  latency_ms=0.4, inputs={"a": np.array([[float(i)]])},
                  outputs={"label": np.array([[i % 2]])}, rows=1)  # fmt: skip
    log.close()
    if ts is not None:  # dated into the past: rewrite the times and the chain as the writer would have
        redate(directory, ts)
    return segments(directory)


def redate(directory: Path, ts: float) -> None:
    from models.log_chain import Chain, record_event

    (directory / MANIFEST).unlink()
    for path in segments(directory):
        chain, out = Chain(path.name), []
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            record["ts"] = ts
            chain.link(record)
            encoded = orjson.dumps(record)
            chain.advance(encoded, ts)
            out.append(encoded + b"\n")
        path.write_bytes(b"".join(out))
        record_event(directory, chain.seal())


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def edit(path: Path) -> None:
    lines = lines_of(path)
    lines[2] = lines[2].replace(b'"label":[0]', b'"label":[1]')  # req-2 answered 0: now it says 1
    assert lines[2] != lines_of(path)[2]
    path.write_bytes(b"".join(lines))


def delete(path: Path) -> None:
    lines = lines_of(path)
    del lines[2]
    path.write_bytes(b"".join(lines))


def reorder(path: Path) -> None:
    lines = lines_of(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))


def truncate(path: Path) -> None:
    path.write_bytes(b"".join(lines_of(path)[:-2]))


def extend(path: Path) -> None:
    """A well-formed record chained to the last one, added after the segment was sealed."""
    last = lines_of(path)[-1]
    record = orjson.loads(last)
    record.update(request_id="forged", seq=record["seq"] + 1, prev=line_hash(last))
    path.write_bytes(path.read_bytes() + orjson.dumps(record) + b"\n")


def edit_last(path: Path) -> None:
    lines = lines_of(path)
    lines[-1] = lines[-1].replace(b'"latency_ms":0.4', b'"latency_ms":9.9')
    path.write_bytes(b"".join(lines))


TAMPERING: dict[str, tuple[Callable[[Path], None], str, int | None, str | None]] = {
    # how: (tamper, kind verify names, record it names, request id it names)
    "edit a record": (edit, "changed", 3, "req-2"),
    "delete a record": (delete, "removed", 3, "req-3"),
    "reorder two records": (reorder, "reordered", 2, "req-2"),
    "truncate the segment": (truncate, "truncated", None, None),
    "append after the seal": (extend, "extended", None, None),
    "edit the last record": (edit_last, "changed", None, None),
}


@pytest.mark.parametrize("how", TAMPERING)
def test_each_tampering_is_named(tmp_path: Path, how: str) -> None:
    first = written_log(tmp_path)[0]
    assert log_audit.verify(tmp_path).ok
    tamper, kind, record, request_id = TAMPERING[how]
    tamper(first)
    audit = log_audit.verify(tmp_path)
    found = audit.first_problem()
    assert not audit.ok and found is not None
    segment, problem = found
    assert (segment, problem.kind) == (first.name, kind), problem
    if record is not None:
        assert (problem.record, problem.request_id) == (record, request_id), problem
    assert "TAMPERED" in audit.lines()[-1]


def test_a_segment_deleted_and_the_manifest_edited_are_named(tmp_path: Path) -> None:
    _, second = written_log(tmp_path)
    second.unlink()
    problem = log_audit.verify(tmp_path).first_problem()
    assert problem is not None and (problem[0], problem[1].kind) == (second.name, "missing")
    manifest = tmp_path / MANIFEST
    manifest.write_bytes(manifest.read_bytes().replace(b'"records":', b'"records": ', 1))
    problem = log_audit.verify(tmp_path).first_problem()
    assert problem is not None and problem[0] == "manifest.log" and problem[1].kind == "changed"


def test_an_unsealed_segment_with_a_torn_line_is_checked_and_not_called_tampered(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path, worker="1")
    for i in range(3):
        log.write(request_id=f"r{i}", model="m", version="1", run_id="r", route="predict", latency_ms=1.0,
                  inputs={"a": np.array([[1.0]])}, outputs={"label": np.array([[1]])}, rows=1)  # fmt: skip
    (segment,) = segments(tmp_path)
    with segment.open("ab") as handle:
        handle.write(b'{"request_id":"torn"')  # killed mid-write
    audit = log_audit.verify(tmp_path)
    assert audit.ok and audit.records == 3
    assert not audit.segments[0].sealed and "torn" in audit.segments[0].note
    log.close()


def test_compaction_keeps_the_chain_and_the_records_and_retention_records_what_it_deletes(
    tmp_path: Path,
) -> None:
    day = 86_400.0
    now = time.time()
    written_log(tmp_path, ts=now - 200 * day)
    before = [r["request_id"] for r in read_records(tmp_path)]
    compacted = log_audit.compact(tmp_path, older_than=now - 7 * day)
    assert len(compacted) == 2 and not segments(tmp_path)
    assert len(list(tmp_path.glob(f"*{COMPACTED_SUFFIX}"))) == 2
    assert [r["request_id"] for r in read_records(tmp_path)] == before  # trace still reads them
    assert log_audit.verify(tmp_path).ok  # the chain is checked in the Parquet files
    deleted = log_audit.expire(tmp_path, before=now - 183 * day, retention_days=183, now=now)
    assert [e["records"] for e in deleted] == [e["records"] for e in deleted if e["records"] > 0]
    assert sum(e["records"] for e in deleted) == len(before)
    assert not list(tmp_path.glob(f"*{COMPACTED_SUFFIX}")) and not list(read_records(tmp_path))
    audit = log_audit.verify(tmp_path)
    assert audit.ok and len(audit.deleted) == 2  # gone, but recorded: not "missing"
    assert any("by retention" in line for line in audit.lines())
    assert log_audit.retention_horizon(tmp_path) == pytest.approx(now - 200 * day)
    events = [e["event"] for e in read_manifest(tmp_path)]
    assert events == ["sealed"] * 2 + ["compacted"] * 2 + ["deleted"] * 2


def test_recent_segments_are_neither_compacted_nor_deleted(tmp_path: Path) -> None:
    written_log(tmp_path)
    now = time.time()
    assert log_audit.compact(tmp_path, older_than=now - 7 * 86_400) == []
    assert log_audit.expire(tmp_path, before=now - 183 * 86_400, retention_days=183, now=now) == []
    assert len(segments(tmp_path)) == 2


def test_a_dead_writers_open_segment_is_sealed_by_maintenance(tmp_path: Path) -> None:
    name = "20260101T000000-w1-p999999-00001.jsonl"  # no such pid
    log = InferenceLog(tmp_path, worker="1")
    log.write(request_id="a", model="m", version="1", run_id="r", route="predict", latency_ms=1.0,
              inputs={"a": np.array([[1.0]])}, outputs={"label": np.array([[1]])}, rows=1)  # fmt: skip
    (segment,) = segments(tmp_path)
    if log._fd is not None:  # killed: never closed, never sealed
        os.close(log._fd)
    record = orjson.loads(segment.read_bytes())
    record["prev"] = genesis(name)
    (tmp_path / name).write_bytes(orjson.dumps(record) + b"\n")
    segment.unlink()
    os.utime(tmp_path / name, (0, 0))
    assert log_audit.seal_orphans(tmp_path, older_than=time.time()) == [name]
    audit = log_audit.verify(tmp_path)
    assert audit.ok and audit.segments[0].sealed
