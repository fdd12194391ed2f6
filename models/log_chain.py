"""The hash chain that makes the append-only logs (inference log, feedback log) checkable by an auditor.

Every record carries ``seq`` (its place in its segment, from 0) and ``prev``: the SHA-256 of the previous
record's line (the JSON bytes without the newline), the first record the hash of the segment's own name
(``genesis``), so a record cannot be moved to another segment either. When a writer closes a segment (it
rotates, or the worker stops) it *seals* it: one line in the folder's ``manifest.log`` with the segment's
name, its record count and its final hash. The manifest is itself a chain (``prev`` of each line).

``verify_lines`` checks one segment and names the first record that was changed, removed or reordered, and
whether a sealed segment was truncated or extended. A segment with no seal is still being written (or its
worker was killed): its chain is checked, but records cut from its end cannot be seen; the report says so.

Compaction (``flows/log_maintenance.py``) moves sealed segments into Parquet files that keep each record's
line as it was written, so the chain stays checkable, and retention deletes them, recording each deletion
in the manifest.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

MANIFEST = "manifest.log"  # not ``*.jsonl``: it is not a segment of records
_GENESIS = b"mlops-log-chain\x00"
SEALED, COMPACTED, DELETED = "sealed", "compacted", "deleted"

ProblemKind = Literal["changed", "removed", "reordered", "truncated", "extended", "torn", "missing"]


def genesis(name: str) -> str:
    """The ``prev`` of a segment's first record: the hash of the segment's name."""
    return hashlib.sha256(_GENESIS + name.encode()).hexdigest()


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


@dataclass
class Chain:
    """A writer's position in one segment: the next record's ``seq`` and ``prev``."""

    name: str
    seq: int = 0
    prev: str = ""
    first_ts: float | None = None
    last_ts: float | None = None

    def __post_init__(self) -> None:
        self.prev = self.prev or genesis(self.name)

    def link(self, record: dict[str, Any]) -> None:
        """Add ``seq`` and ``prev`` to a record about to be written."""
        record["seq"], record["prev"] = self.seq, self.prev

    def advance(self, line: bytes, ts: float | None) -> None:
        """The line was written: the next record follows it."""
        self.seq, self.prev = self.seq + 1, line_hash(line)
        if ts is not None:
            self.first_ts = ts if self.first_ts is None else self.first_ts
            self.last_ts = ts

    def seal(self) -> dict[str, Any]:
        return {
            "event": SEALED,
            "segment": self.name,
            "records": self.seq,
            "final": self.prev,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


def _last_line(handle: Any) -> bytes | None:
    """The last complete line of an open binary file (read backwards in blocks)."""
    end = handle.seek(0, os.SEEK_END)
    data, position = b"", end
    while position > 0:
        step = min(4096, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
        if data.count(b"\n") >= 2 or position == 0:
            break
    lines = [line for line in data.split(b"\n") if line]
    return lines[-1] if lines else None


def append_chained(path: Path, record: dict[str, Any], *, sync: bool = True) -> dict[str, Any]:
    """Append one record to a file shared by several processes (the manifest, the batch segment), chained
    to the file's last line under an exclusive lock; returns the record as written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            last = _last_line(handle)
            if last is None:
                seq, prev = 0, genesis(path.name)
            else:
                seq, prev = int(orjson.loads(last).get("seq", -1)) + 1, line_hash(last)
            written = {**record, "seq": seq, "prev": prev}
            handle.seek(0, os.SEEK_END)
            handle.write(orjson.dumps(written) + b"\n")
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return written


def record_event(directory: Path, event: Mapping[str, Any]) -> dict[str, Any]:
    """One line in the folder's manifest (a seal, a compaction, a deletion), durably."""
    return append_chained(directory / MANIFEST, dict(event))


def read_manifest(directory: Path) -> list[dict[str, Any]]:
    path = directory / MANIFEST
    if not path.is_file():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    record: int | None  # 1-based line number in the segment, when one record is named
    request_id: str | None
    detail: str


@dataclass(frozen=True)
class SegmentReport:
    segment: str
    records: int
    sealed: bool
    problem: Problem | None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _gone(first: int, last: int) -> str:
    return f"record seq {first} is missing" if first == last else f"records seq {first}..{last} are missing"


def _broken_link(
    lines: Sequence[bytes], records: Sequence[dict[str, Any] | None], index: int, expected: int
) -> Problem:
    """What broke the chain at ``index`` (0-based), whose ``seq`` or ``prev`` is not what follows."""
    record = records[index] or {}
    seq = record.get("seq")
    later = {r.get("seq") for r in records[index + 1 :] if r is not None}
    if isinstance(seq, int) and seq > expected and expected in later:
        return Problem("reordered", index + 1, record.get("request_id"),
                       f"record seq {seq} comes before seq {expected}")  # fmt: skip
    if isinstance(seq, int) and seq > expected:
        return Problem("removed", index + 1, record.get("request_id"),
                       _gone(expected, seq - 1) + " before this one")  # fmt: skip
    if isinstance(seq, int) and seq < expected:
        return Problem("reordered", index + 1, record.get("request_id"),
                       f"record seq {seq} comes again after seq {expected - 1}")  # fmt: skip
    if index == 0:
        return Problem("changed", 1, record.get("request_id"),
                       "the first record does not start this segment's chain")  # fmt: skip
    previous = records[index - 1] or {}
    return Problem("changed", index, previous.get("request_id"),
                   f"its hash is not the one record {index + 1} recorded: it was edited")  # fmt: skip


def verify_lines(name: str, lines: Iterable[bytes], seal: Mapping[str, Any] | None) -> SegmentReport:
    """Check one segment's lines (each with or without its newline, the last possibly torn) against its
    chain and, when sealed, against its seal."""
    raw = list(lines)
    torn = bool(raw) and not raw[-1].endswith(b"\n") and seal is None and raw[-1].strip() != b""
    complete = raw[:-1] if torn else raw
    records = [_parse(line) for line in complete]
    prev, expected = genesis(name), 0
    for index, (line, record) in enumerate(zip(complete, records, strict=True)):
        if record is None:
            return SegmentReport(name, index, seal is not None,
                                 Problem("changed", index + 1, None, "not a JSON record"))  # fmt: skip
        if record.get("seq") != expected or record.get("prev") != prev:
            return SegmentReport(
                name, index, seal is not None, _broken_link(complete, records, index, expected)
            )
        prev, expected = line_hash(line), expected + 1
    count = len(complete)
    if seal is None:
        note = "not sealed: being written, or its worker stopped without closing it; records cut from its end"
        note += " cannot be seen" + ("; ends in a torn line (a writer killed mid-write)" if torn else "")
        return SegmentReport(name, count, False, None, note)
    sealed_count, final = int(seal["records"]), seal["final"]
    if count < sealed_count:
        return SegmentReport(name, count, True, Problem("truncated", count + 1, None,
                             f"{sealed_count - count} record(s) after record {count} are gone "
                             f"(sealed with {sealed_count})"))  # fmt: skip
    if count > sealed_count:
        extra = records[sealed_count] or {}
        return SegmentReport(name, count, True, Problem("extended", sealed_count + 1, extra.get("request_id"),
                             f"{count - sealed_count} record(s) added after the seal"))  # fmt: skip
    if prev != final:
        last = records[-1] if records else {}
        return SegmentReport(name, count, True, Problem("changed", count, (last or {}).get("request_id"),
                             "the last record's hash is not the sealed one: it was edited"))  # fmt: skip
    return SegmentReport(name, count, True, None)


def verify_manifest(directory: Path) -> Problem | None:
    """The manifest's own chain: a changed, removed or reordered line."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    lines = path.read_bytes().splitlines(keepends=True)
    report = verify_lines(MANIFEST, lines, None)
    return report.problem


def seals(events: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for event in events:
        if event.get("event") == SEALED:
            yield str(event["segment"]), event
