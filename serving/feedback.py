"""Ground truth for earlier answers: ``POST /v2/models/{name}/feedback``.

A body is ``{"labels": [{"request_id": "...", "row": 0, "label": 1}, ...]}`` (``row`` defaults to 0; a
single ``{"request_id": ..., "label": ...}`` is one label). Every label is checked before any is written:

* the request id must be an answered request of this model within ``feedback_window_h`` (the inference log
  of every worker is read, as it grows, into an index of request ids), and ``row`` one of its rows;
* the label must be one of the model's classes (a classifier) or a finite number (a regressor);
* a (request id, row) given twice in one body is refused; one already labelled with the same label is
  accepted again and not written again (a retried call is harmless); with another label it is a 409.

Then all the labels of the call are written at once to the feedback log (chained and sealed like the
inference log, ``models/log_chain.py``) and synced to disk before the answer: one record per label with the
labelled request's model, version and run id, and the call's own ``feedback_id``. Refusals: 400 malformed,
409 a different label, 413 too many labels, 422 an unknown request id or row, each naming the label.

Two workers given the same label at the same moment may both write it; readers keep the first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from models.inference_records import SEGMENT_SUFFIX
from serving.dataplane import DataPlaneError, InvalidInput
from serving.inference_log import InferenceLog

FEEDBACK_ROUTE = "feedback"
MAX_LABELS = 10_000


class UnknownRequest(DataPlaneError):  # noqa: N818 - as the data plane's errors: what was asked for
    """A label for a request id (or row) this model never answered within the feedback window."""


class LabelConflict(DataPlaneError):  # noqa: N818
    """The request already has another label."""


class TooManyLabels(DataPlaneError):  # noqa: N818
    """More labels in one call than ``MAX_LABELS``."""


@dataclass(frozen=True)
class Answered:
    model: str
    version: str
    run_id: str
    rows: int
    ts: float


class _Tail:
    """Reads a folder of append-only segments as they grow: each call returns only the new complete lines."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[str, int] = {}

    def new_lines(self) -> Iterator[bytes]:
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            offset = self.offsets.get(path.name, 0)
            try:
                if path.stat().st_size <= offset:
                    continue
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:  # compacted or expired meanwhile
                continue
            end = data.rfind(b"\n") + 1  # a line still being written is read next time
            self.offsets[path.name] = offset + end
            yield from data[:end].splitlines()


class RequestIndex:
    """Answered requests by id, from every worker's inference log, kept for ``window_s`` (and at most
    ``max_entries``, the oldest dropped first)."""

    def __init__(self, directory: Path, window_s: float, max_entries: int = 1_000_000) -> None:
        self.tail = _Tail(directory)
        self.window_s, self.max_entries = window_s, max_entries
        self.entries: OrderedDict[str, Answered] = OrderedDict()

    def refresh(self, now: float) -> None:
        for line in self.tail.new_lines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if record.get("role") == "shadow" or not record.get("rows") or record.get("probe"):
                continue  # never answered (a shadow's copy, a refusal) or a check's own request
            self.entries[str(record["request_id"])] = Answered(
                record["model"], str(record["version"]), str(record.get("run_id", "")), int(record["rows"]),
                float(record["ts"]),
            )  # fmt: skip
        horizon = now - self.window_s
        while self.entries and (
            len(self.entries) > self.max_entries or next(iter(self.entries.values())).ts < horizon
        ):
            self.entries.popitem(last=False)


class LabelIndex:
    """The labels already written (by any worker): (request id, row) -> label."""

    def __init__(self, directory: Path) -> None:
        self.tail = _Tail(directory)
        self.labels: dict[tuple[str, int], Any] = {}

    def refresh(self) -> None:
        for line in self.tail.new_lines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            self.labels.setdefault((str(record["request_id"]), int(record["row"])), record["label"])


@dataclass(frozen=True)
class Label:
    request_id: str
    row: int
    label: Any


def parse_labels(body: bytes) -> list[Label]:
    """The labels of a body, or ``InvalidInput`` / ``TooManyLabels`` naming the first problem."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body: invalid JSON ({exc})") from None
    if isinstance(parsed, dict) and "labels" not in parsed and "request_id" in parsed:
        parsed = {"labels": [parsed]}
    if not isinstance(parsed, dict) or not isinstance(parsed.get("labels"), list) or not parsed["labels"]:
        raise InvalidInput('body: expected {"labels": [{"request_id": "...", "row": 0, "label": ...}, ...]}')
    items: list[Any] = parsed["labels"]
    if len(items) > MAX_LABELS:
        raise TooManyLabels(f"labels: {len(items)} in one call, at most {MAX_LABELS}")
    labels = []
    for index, item in enumerate(items):
        where = f"labels[{index}]"
        if not isinstance(item, dict) or set(item) - {"request_id", "row", "label"}:
            raise InvalidInput(f"{where}: expected an object with request_id, row (optional) and label")
        request_id, row = item.get("request_id"), item.get("row", 0)
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInput(f"{where}.request_id: expected the request id of an answer (a string)")
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            raise InvalidInput(f"{where}.row: expected a row number, 0 or more")
        if "label" not in item:
            raise InvalidInput(f"{where}.label: missing")
        labels.append(Label(request_id, row, item["label"]))
    return labels


def check_label(value: Any, classes: Sequence[Any] | None, where: str) -> Any:
    """The label as it will be stored, or ``InvalidInput``: one of ``classes`` (a classifier), else a finite
    number."""
    if classes is None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput(
                f"{where}.label: expected a finite number (the model is a regressor), got {value!r:.40}"
            )
        return float(value)
    known = {_plain(c): _plain(c) for c in classes}
    key = _plain(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
    if key not in known:
        expected = ", ".join(repr(c) for c in known)
        raise InvalidInput(
            f"{where}.label: expected one of the model's classes ({expected}), got {value!r:.40}"
        )
    return known[key]


def _plain(value: Any) -> Any:
    """A class as JSON carries it (numpy integers as int)."""
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True)
class Accepted:
    written: int
    repeated: int


class FeedbackDesk:
    """Checks and records the labels of one worker's feedback calls."""

    def __init__(self, inference_log: Path, feedback_log: Path, worker: str, window_s: float) -> None:
        self.requests = RequestIndex(inference_log, window_s)
        self.labels = LabelIndex(feedback_log)
        self.window_h = window_s / 3600
        self.log = InferenceLog(feedback_log, worker=worker, sync=True)
        self._lock = threading.Lock()

    def submit(
        self, model: str, labels: Sequence[Label], classes: Sequence[Any] | None, feedback_id: str
    ) -> Accepted:
        """All the labels, or none: checked against the index (brought up to date first), then written."""
        with self._lock:
            now = time.time()
            self.requests.refresh(now)
            self.labels.refresh()
            records, repeated, seen = [], 0, set()
            for index, given in enumerate(labels):
                where = f"labels[{index}]"
                key = (given.request_id, given.row)
                if key in seen:
                    raise InvalidInput(
                        f"{where}: request {given.request_id!r} row {given.row} is labelled twice"
                    )
                seen.add(key)
                value = check_label(given.label, classes, where)
                answered = self.requests.entries.get(given.request_id)
                if answered is None or answered.model != model:
                    raise UnknownRequest(f"{where}.request_id: no answered request {given.request_id!r:.70} "
                                         f"of model {model!r} in the last {self.window_h:g} h")  # fmt: skip
                if given.row >= answered.rows:
                    raise UnknownRequest(f"{where}.row: request {given.request_id!r} has {answered.rows} "
                                         f"row(s), no row {given.row}")  # fmt: skip
                earlier = self.labels.labels.get(key, _NONE)
                if earlier is not _NONE and earlier != value:
                    raise LabelConflict(f"{where}.label: request {given.request_id!r} row {given.row} is "
                                        f"already labelled {earlier!r}")  # fmt: skip
                if earlier is not _NONE:
                    repeated += 1
                    continue
                records.append(_record(given, value, answered, feedback_id, now))
            self.log.append_many(records)
            for record in records:
                self.labels.labels[(record["request_id"], record["row"])] = record["label"]
            return Accepted(len(records), repeated)

    def close(self) -> None:
        self.log.close()


_NONE = object()


def _record(given: Label, value: Any, answered: Answered, feedback_id: str, now: float) -> dict[str, Any]:
    return {
        "request_id": given.request_id,
        "row": given.row,
        "label": value,
        "ts": now,
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "model": answered.model,
        "version": answered.version,
        "run_id": answered.run_id,
        "route": FEEDBACK_ROUTE,
        "feedback_id": feedback_id,
        "answered_ts": answered.ts,
    }
