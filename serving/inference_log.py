"""The inference log: one JSON line per served request, in per-worker, size-rotated segment files.

Each serving worker appends to its own segment (``<started>-w<worker>-p<pid>-<seq>.jsonl``) with one
``write`` of a complete line to an ``O_APPEND`` descriptor before the response leaves, so a line reaches
the operating system even if the worker is killed right after. No two processes share a file, so workers
never contend or interleave; a restarted worker starts new segments and never touches old ones. A segment
that reaches ``max_bytes`` is closed and the next one opened.

Every record is chained to the one before it (``seq``, ``prev``; ``models/log_chain.py``), and a segment
the writer closes is sealed in the folder's manifest with its count and final hash, so ``mlops verify-log``
names any record changed, removed or reordered afterwards. A write that fails leaves its segment unsealed
and the next record starts a new one.

The record's fields, and the reader that monitoring and checks use, are the contract in
``models/inference_records.py``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.inference_records import SEGMENT_SUFFIX
from models.log_chain import Chain, record_event

_DUMP = orjson.OPT_SERIALIZE_NUMPY
_DUMP_OPTIONS = _DUMP | orjson.OPT_APPEND_NEWLINE


class InferenceLogError(OSError):
    """A record could not be written (disk full, unwritable folder)."""


def _to_jsonable(values: Any) -> Any:
    if isinstance(values, np.ndarray) and values.dtype == object:
        return values.ravel().tolist()
    if isinstance(values, np.ndarray):
        return (
            values.reshape(values.shape[0], -1) if values.ndim > 1 and values.shape[1] > 1 else values.ravel()
        )
    return values


def _stamp(request_id: str, model: str, version: str, route: str) -> dict[str, Any]:
    now = time.time()
    return {
        "request_id": request_id,
        "ts": now,
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "model": model,
        "version": version,
        "route": route,
    }


@dataclass
class InferenceLog:
    """Appends records for one worker process; thread-safe; rotates by size."""

    directory: Path
    worker: str
    max_bytes: int = 64 * 1024 * 1024
    sync: bool = False  # fsync each record before returning (the feedback log: written durably before 2xx)
    _fd: int | None = field(default=None, init=False, repr=False)
    _chain: Chain | None = field(default=None, init=False, repr=False)
    _size: int = field(default=0, init=False, repr=False)
    _seq: int = field(default=0, init=False, repr=False)
    _started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%S"), init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    written: int = field(default=0, init=False)
    failed: int = field(default=0, init=False)

    def _segment(self) -> Path:
        return (
            self.directory / f"{self._started}-w{self.worker}-p{os.getpid()}-{self._seq:05d}{SEGMENT_SUFFIX}"
        )

    def _open(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        segment = self._segment()
        self._fd = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = 0
        self._chain = Chain(segment.name)
        return self._fd

    @staticmethod
    def encode(values: Mapping[str, Any]) -> orjson.Fragment:
        """Tensors as the record will hold them, serialised ahead (``write`` embeds them as they are)."""
        return orjson.Fragment(orjson.dumps({k: _to_jsonable(v) for k, v in values.items()}, option=_DUMP))

    def write(
        self,
        *,
        request_id: str,
        model: str,
        version: str,
        run_id: str,
        route: str,
        latency_ms: float,
        inputs: Mapping[str, Any] | orjson.Fragment,
        outputs: Mapping[str, Any],
        rows: int,
        probe: bool = False,
        role: str | None = None,
    ) -> None:
        record = {
            **_stamp(request_id, model, version, route),
            "run_id": run_id,
            "rows": rows,
            "latency_ms": round(latency_ms, 3),
            "inputs": inputs
            if isinstance(inputs, orjson.Fragment)
            else {k: _to_jsonable(v) for k, v in inputs.items()},
            "outputs": {k: _to_jsonable(v) for k, v in outputs.items()},
        }
        if probe:  # the deploy checks' own requests: logged like any, left out of the monitor's window
            record["probe"] = True
        if role is not None:  # answered by the canary, or run by the shadow (never answered)
            record["role"] = role
        self.append(record)

    def write_error(
        self,
        *,
        request_id: str,
        model: str,
        version: str,
        route: str,
        status: int,
        error: str,
        role: str | None = None,
    ) -> None:
        """A refused request: no prediction, but it counts in the error rate the monitor reports."""
        record = {
            **_stamp(request_id, model, version, route),
            "rows": 0,
            "status": status,
            "error": error[:500],
        }
        if role is not None:
            record["role"] = role
        self.append(record)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record (chained to the one before it) as one line; raises ``InferenceLogError``."""
        with self._lock:
            try:
                fd = self._fd if self._fd is not None and self._size < self.max_bytes else self._rotate()
                chain = self._chain
                assert chain is not None
                chain.link(record)
                line = orjson.dumps(record, option=_DUMP_OPTIONS)
                written = os.write(fd, line)
                if written != len(line):  # a short write (disk full) leaves a partial line: report it
                    raise OSError(f"short write: {written} of {len(line)} bytes")
                if self.sync:
                    os.fsync(fd)
            except OSError as exc:
                self.failed += 1
                self._abandon()
                raise InferenceLogError(f"inference log write failed: {exc}") from exc
            chain.advance(line, record.get("ts"))
            self._size += written
            self.written += 1

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Several records chained in order and written with one ``write`` (and one sync): all or none."""
        if not records:
            return
        with self._lock:
            try:
                fd = self._fd if self._fd is not None and self._size < self.max_bytes else self._rotate()
                chain = self._chain
                assert chain is not None
                lines = []
                for record in records:
                    chain.link(record)
                    lines.append(orjson.dumps(record, option=_DUMP_OPTIONS))
                    chain.advance(lines[-1], record.get("ts"))
                data = b"".join(lines)
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write: {written} of {len(data)} bytes")
                if self.sync:
                    os.fsync(fd)
            except OSError as exc:
                self.failed += len(records)
                self._abandon()
                raise InferenceLogError(f"log write failed: {exc}") from exc
            self._size += written
            self.written += len(records)

    def _rotate(self) -> int:
        self._close()
        return self._open()

    def _abandon(self) -> None:
        """After a failed write: the segment stays unsealed (it may end in a torn line); the next record
        opens a new one."""
        self._chain = None
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        chain, self._chain = self._chain, None
        if chain is not None:
            with contextlib.suppress(OSError):  # unsealed, the segment is still checked record by record
                record_event(self.directory, chain.seal())

    def close(self) -> None:
        with self._lock:
            self._close()
