"""Checking, compacting and expiring a chained log folder (the inference log, the feedback log).

``verify`` checks every segment, live or compacted, against its chain and its seal, the manifest's own
chain, and that no sealed segment is gone unless retention deleted it (and recorded so). ``compact`` moves
sealed segments older than the compaction age into Parquet (each record's line kept as written, so the
chain stays checkable and ``read_records`` still reads them), and ``expire`` deletes what is past
retention, recording each deletion (segment, records, final hash, time range) in the manifest first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from models.inference_records import (
    COMPACTED_SUFFIX,
    SEGMENT_SUFFIX,
    all_segments,
    segment_lines,
    segment_name,
)
from models.log_chain import (
    COMPACTED,
    DELETED,
    SEALED,
    Problem,
    SegmentReport,
    line_hash,
    read_manifest,
    record_event,
    verify_lines,
    verify_manifest,
)
from models.settings import Settings

_PID = re.compile(r"-p(\d+)-\d+$")


@dataclass(frozen=True)
class LogAudit:
    directory: Path
    segments: list[SegmentReport]
    manifest: Problem | None
    deleted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.manifest is None and all(report.ok for report in self.segments)

    @property
    def records(self) -> int:
        return sum(report.records for report in self.segments)

    def first_problem(self) -> tuple[str, Problem] | None:
        if self.manifest is not None:
            return "manifest.log", self.manifest
        for report in self.segments:
            if report.problem is not None:
                return report.segment, report.problem
        return None

    def lines(self) -> list[str]:
        out = [f"{self.directory}: {len(self.segments)} segment(s), {self.records} record(s)"]
        for report in self.segments:
            state = "sealed" if report.sealed else "open"
            if report.problem is None:
                out.append(f"  ok       {report.segment} ({report.records} records, {state})"
                           + (f": {report.note}" if report.note and not report.sealed else ""))  # fmt: skip
            else:
                problem = report.problem
                where = f"record {problem.record}" if problem.record is not None else "segment"
                rid = f" (request {problem.request_id})" if problem.request_id else ""
                out.append(f"  {problem.kind.upper():<8} {report.segment}: {where}{rid}: {problem.detail}")
        for event in self.deleted:
            span = f"{_day(event.get('first_ts'))}..{_day(event.get('last_ts'))}"
            out.append(f"  deleted  {event['segment']} ({event['records']} records, {span}) "
                       f"by {event.get('reason')} on {_day(event.get('at'))}")  # fmt: skip
        if self.manifest is not None:
            out.append(f"  {self.manifest.kind.upper():<8} manifest.log: line {self.manifest.record}: "
                       f"{self.manifest.detail}")  # fmt: skip
        first = self.first_problem()
        out.append("verdict: intact" if first is None else f"verdict: TAMPERED: first problem in {first[0]}")
        return out


def _day(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "?"
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def _latest(events: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {str(event["segment"]): event for event in events if event.get("event") == kind}


def verify(directory: Path) -> LogAudit:
    events = read_manifest(directory)
    sealed, deleted = _latest(events, SEALED), _latest(events, DELETED)
    reports: list[SegmentReport] = []
    present: set[str] = set()
    for path in all_segments(directory):
        name = segment_name(path)
        present.add(name)
        reports.append(verify_lines(name, segment_lines(path), sealed.get(name)))
    for name, seal in sealed.items():
        if name not in present and name not in deleted:
            reports.append(SegmentReport(name, 0, True, Problem("missing", None, None,
                           f"sealed with {seal['records']} records; the file is gone and no deletion is "
                           "recorded")))  # fmt: skip
    gone = [event for name, event in deleted.items() if name not in present]
    return LogAudit(directory, reports, verify_manifest(directory), gone)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_ts(lines: list[bytes]) -> tuple[float | None, float | None]:
    stamps = []
    for line in (lines[0], lines[-1]) if lines else ():
        try:
            stamps.append(orjson.loads(line).get("ts"))
        except orjson.JSONDecodeError:
            stamps.append(None)
    return (stamps[0], stamps[-1]) if stamps else (None, None)


def seal_orphans(directory: Path, *, older_than: float) -> list[str]:
    """Seal the live segments whose writer is gone (its pid is not running and the file is older than
    ``older_than``), so that they can be compacted; a torn last line is left out of the seal."""
    sealed = _latest(read_manifest(directory), SEALED)
    done: list[str] = []
    for path in sorted(directory.glob(f"*{SEGMENT_SUFFIX}")):
        match = _PID.search(path.stem)
        if path.name in sealed or match is None or _alive(int(match.group(1))):
            continue
        if path.stat().st_mtime >= older_than:
            continue
        lines = [line for line in path.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]
        report = verify_lines(path.name, lines, None)
        if report.problem is not None:
            continue  # a broken chain is left for verify to name
        first_ts, last_ts = _last_ts(lines)
        record_event(directory, {"event": SEALED, "segment": path.name, "records": len(lines),
                                 "final": line_hash(lines[-1]) if lines else None, "first_ts": first_ts,
                                 "last_ts": last_ts, "by": "maintenance (writer gone)"})  # fmt: skip
        done.append(path.name)
    return done


def _write_parquet(lines: list[bytes], target: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [orjson.loads(line) for line in lines]
    table = pa.table(
        {
            "line": [line.rstrip(b"\n").decode() for line in lines],
            "request_id": [r.get("request_id") for r in records],
            "ts": [r.get("ts") for r in records],
            "model": [r.get("model") for r in records],
            "version": [r.get("version") for r in records],
            "route": [r.get("route") for r in records],
        }
    )
    temporary = target.with_suffix(".tmp")
    pq.write_table(table, temporary, compression="zstd")
    temporary.replace(target)


def compact(directory: Path, *, older_than: float) -> list[str]:
    """Sealed, intact live segments whose last record is before ``older_than`` become Parquet files; each is
    checked against its seal after writing, before the ``.jsonl`` is removed."""
    sealed = _latest(read_manifest(directory), SEALED)
    done: list[str] = []
    for path in sorted(directory.glob(f"*{SEGMENT_SUFFIX}")):
        seal = sealed.get(path.name)
        if seal is None or (seal.get("last_ts") or 0) >= older_than:
            continue
        lines = path.read_bytes().splitlines(keepends=True)
        if not verify_lines(path.name, lines, seal).ok:
            continue  # left as it is, for verify to name
        target = path.with_suffix(COMPACTED_SUFFIX)
        _write_parquet(lines, target)
        if not verify_lines(path.name, segment_lines(target), seal).ok:
            target.unlink()
            continue
        record_event(directory, {"event": COMPACTED, "segment": path.name, "file": target.name,
                                 "records": seal["records"], "final": seal["final"]})  # fmt: skip
        path.unlink()
        done.append(path.name)
    return done


def expire(directory: Path, *, before: float, retention_days: float, now: float) -> list[dict[str, Any]]:
    """Delete sealed segments (live or compacted) whose last record is before ``before``, recording each
    deletion in the manifest before the file goes."""
    sealed = _latest(read_manifest(directory), SEALED)
    deleted: list[dict[str, Any]] = []
    for path in all_segments(directory):
        seal = sealed.get(segment_name(path))
        if seal is None or (seal.get("last_ts") or now) >= before:
            continue
        event = record_event(directory, {"event": DELETED, "segment": segment_name(path), "file": path.name,
                                         "records": seal["records"], "final": seal["final"],
                                         "first_ts": seal.get("first_ts"), "last_ts": seal.get("last_ts"),
                                         "reason": "retention", "retention_days": retention_days,
                                         "at": now})  # fmt: skip
        path.unlink()
        deleted.append(event)
    return deleted


def retention_horizon(directory: Path) -> float | None:
    """The last record time of everything retention deleted here (records before it may be gone)."""
    stamps = [e.get("last_ts") for e in read_manifest(directory) if e.get("event") == DELETED]
    known = [float(ts) for ts in stamps if isinstance(ts, int | float)]
    return max(known) if known else None


DAY_S = 86_400.0


def log_dirs(settings: Settings) -> list[Path]:
    """The folders whose records are chained: the inference log and the feedback log."""
    return [settings.inference_log_dir, settings.feedback_log_dir]


def verify_all(directories: list[Path]) -> list[LogAudit]:
    return [verify(directory) for directory in directories if directory.is_dir()]


@dataclass(frozen=True)
class Maintenance:
    directory: Path
    sealed: list[str]
    compacted: list[str]
    deleted: list[dict[str, object]]

    def line(self) -> str:
        records = sum(int(str(event["records"])) for event in self.deleted)
        return (f"{self.directory}: sealed {len(self.sealed)} orphaned, compacted {len(self.compacted)}, "
                f"deleted {len(self.deleted)} past retention ({records} records)")  # fmt: skip


def maintain(directory: Path, *, compact_after_days: float, retention_days: float, now: float) -> Maintenance:
    """Seal segments whose writer is gone, compact sealed ones past the compaction age, expire those past
    retention (each deletion recorded in the manifest first)."""
    sealed = seal_orphans(directory, older_than=now - max(compact_after_days * DAY_S, 3600.0))
    compacted = compact(directory, older_than=now - compact_after_days * DAY_S)
    deleted = expire(directory, before=now - retention_days * DAY_S, retention_days=retention_days, now=now)
    return Maintenance(directory, sealed, compacted, deleted)
