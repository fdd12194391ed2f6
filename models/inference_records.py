"""The inference-log record: what serving writes for every request and what monitoring, checks and tests read.

A contract between ``serving/`` (the writer, ``serving/inference_log.py``) and ``flows/`` (the monitor, the
deploy checks), so both import it from here and neither imports the other.

The log is a folder of segment files (``*.jsonl``), one JSON line per request. Record fields:
``request_id``, ``ts`` (epoch seconds), ``time`` (ISO 8601, UTC), ``model``, ``version``, ``run_id``,
``route``, ``rows``, ``latency_ms``, ``inputs`` (feature -> list of values, one per row), ``outputs``
(output -> list, one per row), ``probe`` (sent by a check, not a consumer) and ``role``: ``canary`` (the
canary answered it) or ``shadow`` (a copy the shadow ran, same ``request_id`` as the answered record, never
answered); no ``role``: the champion, or a version asked for by path. A refused request is a
record with ``status`` and ``error`` and no rows. ``read_records`` streams them back; ``iter_rows``
flattens them into one dict per prediction row.

A batch scoring run adds one record to the segment ``batches.jsonl``: ``route`` ``batch``, ``request_id``
the batch id (every output row's ``batch_id``), ``model``, ``version``, ``run_id``, ``rows``, ``scored``,
``quarantined``, ``files`` (input, its digest, output, quarantine) and ``batch_run`` (the MLflow run).
``read_records`` leaves batch records out unless asked (``batches=True``): they are not requests.

Every record also carries ``seq`` and ``prev``, its link in its segment's hash chain
(``models/log_chain.py``).
Segments past the compaction age are Parquet files (``*.parquet``, same name) holding each record's line as
written (column ``line``); ``read_records`` reads both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from models.log_chain import append_chained

SEGMENT_SUFFIX = ".jsonl"
COMPACTED_SUFFIX = ".parquet"  # a sealed segment compacted: one row per record, its line in ``line``
# Sent by the deploy checks: their requests are logged like any other but marked (``probe``), so that the
# drift monitor judges consumers' traffic, not the checks' golden rows.
PROBE_HEADER = "x-mlops-probe"
BATCH_SEGMENT = f"batches{SEGMENT_SUFFIX}"
BATCH_ROUTE = "batch"


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SEGMENT_SUFFIX}")) if directory.is_dir() else []


def all_segments(directory: Path) -> list[Path]:
    """Live (``.jsonl``) and compacted (``.parquet``) segments, oldest first (names start with a time)."""
    if not directory.is_dir():
        return []
    found = [*directory.glob(f"*{SEGMENT_SUFFIX}"), *directory.glob(f"*{COMPACTED_SUFFIX}")]
    return sorted(found, key=lambda path: path.stem)


def segment_name(path: Path) -> str:
    """The name the segment was written under (its chain starts from it), compacted or not."""
    return path.stem + SEGMENT_SUFFIX


def segment_lines(path: Path) -> Iterator[bytes]:
    """A segment's lines as written (a live segment's last may be torn: no newline)."""
    if path.suffix == COMPACTED_SUFFIX:
        import pyarrow.parquet as pq  # only when compacted segments exist (serving never reads them)

        table = pq.ParquetFile(path)
        for batch in table.iter_batches(columns=["line"], batch_size=4096):
            for line in batch.column(0).to_pylist():
                yield line.encode() + b"\n"
        return
    with path.open("rb") as handle:
        yield from handle


def read_records(
    directory: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    version: str | None = None,
    batches: bool = False,
) -> Iterator[dict[str, Any]]:
    """Stream records (one per request; with ``batches``, batch runs' too) in segment order; a torn last
    line (killed writer) is skipped."""
    for segment in all_segments(directory):
        for line in segment_lines(segment):
            if not line.endswith(b"\n"):
                continue
            try:
                record: dict[str, Any] = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if since is not None and record["ts"] < since:
                continue
            if until is not None and record["ts"] >= until:
                continue
            if version is not None and record["version"] != version:
                continue
            if record.get("route") == BATCH_ROUTE and not batches:
                continue
            yield record


def append_batch_record(directory: Path, record: dict[str, Any]) -> None:
    """One batch run's record, appended as one line to the shared batch segment, chained to its last line
    under a lock, and synced."""
    append_chained(directory / BATCH_SEGMENT, {**record, "route": BATCH_ROUTE})


def feedback_labels(directory: Path, *, model: str | None = None) -> dict[tuple[str, int], Any]:
    """(request id, row) -> ground-truth label from the feedback log (``serving/feedback.py``); a label given
    twice keeps the first."""
    labels: dict[tuple[str, int], Any] = {}
    for record in read_records(directory):
        if model is None or record.get("model") == model:
            labels.setdefault((str(record["request_id"]), int(record["row"])), record["label"])
    return labels


def iter_rows(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One dict per prediction row: the request's provenance, its inputs and its outputs for that row."""
    for record in records:
        for index in range(record["rows"]):
            yield {
                "request_id": record["request_id"],
                "row": index,
                "ts": record["ts"],
                "version": record["version"],
                "run_id": record["run_id"],
                "inputs": {k: v[index] for k, v in record["inputs"].items()},
                "outputs": {k: v[index] for k, v in record["outputs"].items()},
            }
