"""Batch scoring of whole files with the served artifact: read in chunks, set aside the rows that cannot be
scored (with the reason), score the rest through the service's own encoding (``features.feeds_from_columns``)
and decoding (``scoring.output_columns``), write Parquet with provenance, committed by rename.

No framework: pyarrow, fsspec and onnxruntime, and pandas only to read CSV (a Dask worker scoring Parquet
holds 45 MiB less without it). ``flows/batch.py`` adds Prefect, MLflow and Dask.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import posixpath
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.datasets import DatasetSpec
from models.features import feeds_from_columns
from models.scoring import OnnxModel, output_columns, predictions

READABLE = (".csv", ".parquet", ".pq")
PROVENANCE_COLUMNS = ("model_name", "model_version", "run_id", "batch_id", "input_file", "row_number")
QUARANTINE_DIR = "_quarantine"
MODEL_DIR = "_model"  # the exact ONNX file the batch was scored with, beside its output
SAMPLE_ROWS = 10_000  # rows of each file kept, uniformly at random, for the skew report
# Rows per onnxruntime call: measured over 1,000,000 rows of the demo model, one thread, calls of 100,000 rows
# ran 3.4M rows/s and calls of 8,192 rows 6.7M (the intermediate tensors stay in cache), and the arena that
# keeps their buffers holds little.
MODEL_CALL_ROWS = 8192


@dataclass(frozen=True)
class Provenance:
    """What produced every row of a batch's output."""

    model_name: str
    model_version: str
    run_id: str
    batch_id: str


@dataclass(frozen=True)
class FileResult:
    input_file: str
    output_file: str
    quarantine_file: str | None
    input_digest: str
    rows: int
    scored: int
    quarantined: int
    seconds: float
    started_at: float  # wall clock (time.time()): the batch's scoring span is from the first to the last
    finished_at: float
    sample: pa.Table  # scored rows' features and prediction, for the skew report


def input_files(source: str) -> list[str]:
    """The files a source names: a file, every readable file under a directory, or a glob; any fsspec URL."""
    fs, path = fsspec.core.url_to_fs(source)
    if glob.has_magic(path):
        found = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if p.lower().endswith(READABLE)]
    elif fs.isfile(path):
        found = [path]
    else:
        raise FileNotFoundError(f"batch input {source!r}: no such file or directory")
    unreadable = [p for p in found if not p.lower().endswith(READABLE)]
    if unreadable:
        raise ValueError(f"batch input {source!r}: {unreadable[:3]} are not .csv or .parquet files")
    if not found:
        raise FileNotFoundError(f"batch input {source!r}: no .csv or .parquet file there")
    local = "file" in _protocols(fs)
    return sorted(p if local else fs.unstrip_protocol(p) for p in found)


def output_names(files: list[str]) -> dict[str, str]:
    """Each input's output path relative to the output folder: the input's own layout, as ``.parquet``."""
    paths = [fsspec.core.url_to_fs(f)[1] for f in files]
    root = posixpath.dirname(paths[0]) if len(paths) == 1 else posixpath.commonpath(paths)
    return {
        file: posixpath.splitext(posixpath.relpath(path, root))[0] + ".parquet"
        for file, path in zip(files, paths, strict=True)
    }


def read_chunks(url: str, chunk_rows: int) -> Iterator[pa.Table]:
    """The file's rows, about ``chunk_rows`` at a time: never all at once.

    Parquet is read a row group at a time (split into chunks when larger than two chunks), a column at a
    time, on one thread: pyarrow's reader of a whole row group holds about five times the group's size while
    it decodes, and its thread pool only contends with the other workers on a few cores. Measured on
    1,000,000 rows of 30 doubles in 10 row groups: a column at a time 0.19 s and 57 MiB above the imports,
    the whole group at once 0.26 s and 126 MiB, the batch reader (reading ahead, threads) 0.45 s and 450 MiB.
    """
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as handle:
        if url.lower().endswith(".csv"):
            import pandas as pd

            for frame in pd.read_csv(handle, chunksize=chunk_rows):
                yield pa.Table.from_pandas(frame, preserve_index=False)
            return
        # A local file through Arrow's own reader: through a Python file object every page is copied twice.
        parquet = pq.ParquetFile(path if "file" in _protocols(fs) else handle, pre_buffer=False)
        names = parquet.schema_arrow.names
        if len(set(names)) != len(names):  # a column cannot be asked for by a name it shares
            for batch in parquet.iter_batches(chunk_rows, use_threads=False):
                yield pa.Table.from_batches([batch])
            return
        for group in range(parquet.num_row_groups):
            if parquet.metadata.row_group(group).num_rows <= 2 * chunk_rows:
                columns = [parquet.read_row_group(group, [name], use_threads=False) for name in names]
                yield pa.table([column.column(0) for column in columns], names=names)
                continue
            for batch in parquet.iter_batches(chunk_rows, row_groups=[group], use_threads=False):
                yield pa.Table.from_batches([batch])


def read_head(url: str, rows: int) -> pa.Table:
    """The file's first ``rows`` rows (a schema check's sample), a column at a time for Parquet: the first
    1,000 rows of a group of 100,000 take 12 MiB so, 94 MiB with every column's reader open at once."""
    if url.lower().endswith(".csv"):
        return next(read_chunks(url, rows), pa.table({}))
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(path if "file" in _protocols(fs) else handle, pre_buffer=False)
        names = parquet.schema_arrow.names
        if parquet.metadata.num_rows == 0 or len(set(names)) != len(names):
            return next(read_chunks(url, rows), parquet.schema_arrow.empty_table())
        columns = [
            next(parquet.iter_batches(rows, columns=[name], use_threads=False)).column(0) for name in names
        ]
        return pa.table(columns, names=names)


def file_digest(url: str, block: int = 1 << 20) -> str:
    """A digest of the file's bytes (the batch's data, as recorded for traceability).

    Read into one buffer: a fresh ``bytes`` per block is a fresh mapping on a Dask worker (its malloc returns
    every large block at once), and zeroing its pages cost as much as the hashing.
    """
    hasher = hashlib.sha256()
    buffer = bytearray(block)
    view = memoryview(buffer)
    with fsspec.open(url, "rb") as handle:
        while size := handle.readinto(buffer):
            hasher.update(view[:size])
    return hasher.hexdigest()[:16]


class _Reasons:
    """Why each row of a chunk cannot be scored: the first problem found, None for a row that can be."""

    def __init__(self, rows: int) -> None:
        self.reasons = np.full(rows, None, dtype=object)
        self.flagged = np.zeros(rows, dtype=bool)

    def mark(self, mask: np.ndarray, column: pa.ChunkedArray, problem: str) -> None:
        """Give each row under ``mask`` not flagged yet ``problem`` formatted with its value there."""
        fresh = mask & ~self.flagged
        for i in np.flatnonzero(fresh):  # only bad rows are visited in Python
            self.reasons[i] = problem.format(column[int(i)].as_py())
        self.flagged |= fresh


_NUMPY_TYPES = {
    pa.float64(): np.float64, pa.float32(): np.float32, pa.int64(): np.int64, pa.int32(): np.int32,
    pa.int16(): np.int16, pa.int8(): np.int8, pa.uint64(): np.uint64, pa.uint32(): np.uint32,
    pa.uint16(): np.uint16, pa.uint8(): np.uint8,
}  # fmt: skip


def _values(column: pa.ChunkedArray) -> np.ndarray:
    """A column as NumPy, read off Arrow's buffers for numbers and booleans without nulls (no copy for
    numbers): pyarrow's own ``to_numpy`` imports pandas, 45 MiB in every worker. Anything else by pyarrow."""
    parts = []
    for chunk in column.chunks:
        if chunk.null_count or not (chunk.type in _NUMPY_TYPES or pa.types.is_boolean(chunk.type)):
            parts.append(chunk.to_numpy(zero_copy_only=False))
        elif pa.types.is_boolean(chunk.type):
            bits = np.unpackbits(np.frombuffer(chunk.buffers()[1], np.uint8), bitorder="little")
            parts.append(bits[chunk.offset : chunk.offset + len(chunk)].view(bool))
        else:
            dtype = np.dtype(_NUMPY_TYPES[chunk.type])
            parts.append(np.frombuffer(chunk.buffers()[1], dtype, len(chunk), chunk.offset * dtype.itemsize))
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0)


_ARROW_TYPES = {np.dtype(numpy): arrow for arrow, numpy in _NUMPY_TYPES.items()}


def _arrow(values: np.ndarray) -> pa.Array:
    """NumPy to Arrow, numbers and booleans by their buffers (pyarrow's own conversion imports pandas too);
    anything else (text labels) by pyarrow."""
    if values.dtype == np.bool_:
        bits = pa.py_buffer(np.packbits(values, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, bits])
    if values.dtype in _ARROW_TYPES:
        data = pa.py_buffer(np.ascontiguousarray(values))
        return pa.Array.from_buffers(_ARROW_TYPES[values.dtype], len(values), [None, data])
    return pa.array(values)


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """A column as float64 (nulls and text that is not a number: NaN); no copy for a float column."""
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        return np.asarray(_values(column), dtype=np.float64)
    import pandas as pd

    parsed = pd.to_numeric(column.to_pandas(), errors="coerce")
    return np.asarray(parsed.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def check_rows(table: pa.Table, spec: DatasetSpec) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Why each row cannot be scored (None: it can; the first problem found), and the features as columns.

    Nulls, values that are not numbers or not finite, values outside the range the training data's
    validation allows, unknown categories: the rules the data suite applies to training data, per row.
    Each test is one vectorised pass; only the rows that fail one are visited to word the reason.
    """
    found = _Reasons(table.num_rows)
    columns: dict[str, np.ndarray] = {}
    for feature in spec.features:
        name, column = feature.name, table.column(feature.name)
        null = _values(column.is_null()) if column.null_count else None
        if null is not None:
            found.mark(null, column, f"{name}: null")
        if feature.kind == "numeric":
            values = _numbers(column)
            finite = np.isfinite(values)
            if not finite.all():
                found.mark(
                    ~finite if null is None else ~finite & ~null,
                    column,
                    f"{name}: not a finite number: {{!r:.40}}",
                )
            with np.errstate(invalid="ignore"):
                if feature.min_value is not None and (low := values < feature.min_value).any():
                    found.mark(
                        low,
                        column,
                        f"{name}: {{:g}} is below {feature.min_value:g}, the lower bound of its data suite",
                    )
                if feature.max_value is not None and (high := values > feature.max_value).any():
                    found.mark(
                        high,
                        column,
                        f"{name}: {{:g}} is above {feature.max_value:g}, the upper bound of its data suite",
                    )
            columns[name] = values
        else:
            if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
                text = np.array([isinstance(v, str) for v in column.to_pylist()])
                found.mark(
                    ~text if null is None else ~text & ~null, column, f"{name}: not a string: {{!r:.40}}"
                )
            elif feature.categories:
                known = _values(pc.is_in(column, value_set=pa.array(feature.categories)))
                unknown = ~known if null is None else ~known & ~null
                found.mark(unknown, column, f"{name}: unknown category {{!r:.40}}")
            columns[name] = np.array(column.to_pylist(), dtype=object)
    return found.reasons, columns


def score_table(
    model: OnnxModel, spec: DatasetSpec, table: pa.Table
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Score the rows that can be: (which were scored, their outputs as columns, why the others were not)."""
    reasons, columns = check_rows(table, spec)
    ok = reasons == None  # noqa: E711 - elementwise on an object array
    outputs: dict[str, np.ndarray] = {}
    if ok.all():
        outputs = output_columns(
            run_in_slices(model, feeds_from_columns(columns, model.inputs)), model.classes
        )
    elif ok.any():
        feeds = feeds_from_columns({name: values[ok] for name, values in columns.items()}, model.inputs)
        outputs = output_columns(run_in_slices(model, feeds), model.classes)
    return ok, outputs, reasons[~ok]


def run_in_slices(
    model: OnnxModel, feeds: dict[str, np.ndarray], rows: int = MODEL_CALL_ROWS
) -> list[np.ndarray]:
    """The model over ``rows`` rows a call, the outputs joined: what one call over them all gives."""
    total = len(next(iter(feeds.values())))
    if total <= rows:
        return model.run(feeds)
    parts = [
        model.run({name: value[start : start + rows] for name, value in feeds.items()})
        for start in range(0, total, rows)
    ]
    return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]


def golden_mismatches(
    model: OnnxModel, spec: DatasetSpec, golden: dict[str, Any], tolerance: float
) -> list[str]:
    """Batch scoring of the version's golden rows against the answers the version gave them at conversion
    (the same rows and answers the service checks itself against before it answers anyone)."""
    table = pa.Table.from_pylist(golden["records"])
    ok, outputs, reasons = score_table(model, spec, table)
    if not ok.all():
        return [f"golden rows not scorable: {sorted(set(reasons))[:3]}"]
    expected = golden.get("probabilities") if model.classes is not None else golden.get("values")
    if model.classes is not None:
        got = np.column_stack([outputs[f"probability_{c}"] for c in model.classes])
        labels = [p["label"] for p in predictions([outputs["label"], got], model.classes)]
        if labels != golden["labels"]:
            return [f"labels differ on golden rows: {labels[:5]} vs {golden['labels'][:5]}"]
    else:
        got = outputs["value"]
    diff = float(np.max(np.abs(np.asarray(got) - np.asarray(expected)))) if table.num_rows else 0.0
    return [] if diff <= tolerance else [f"golden rows differ by {diff:.3g} > {tolerance:g}"]


class _PartialParquet:
    """A Parquet file written under a temporary name and renamed into place only when complete."""

    def __init__(self, url: str) -> None:
        self.fs, self.path = fsspec.core.url_to_fs(url)
        self.partial = f"{self.path}.partial-{uuid.uuid4().hex[:8]}"
        self.writer: pq.ParquetWriter | None = None
        self.handle: Any = None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
            self.handle = self.fs.open(self.partial, "wb")
            self.writer = pq.ParquetWriter(
                self.handle,
                table.schema,
                # Dictionary pages for the text columns only: probabilities never repeat, and trying costs
                # more than writing them (with statistics on every column, 5x the time of this).
                use_dictionary=[f.name for f in table.schema if not pa.types.is_floating(f.type)],
                compression="lz4",
                write_statistics=["row_number"],
            )
        self.writer.write_table(table.cast(self.writer.schema))

    def commit(self) -> bool:
        """Close and rename into place (replacing an earlier attempt's file); whether anything was written."""
        if self.writer is None:
            return False
        self.writer.close()
        self.handle.close()
        self.fs.mv(self.partial, self.path)
        return True

    def discard(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(Exception):  # the writer may be the thing that failed
                self.writer.close() if self.writer is not None else None
            self.handle.close()
            self.fs.rm(self.partial)


def score_file(
    model: OnnxModel,
    spec: DatasetSpec,
    url: str,
    output_url: str,
    quarantine_url: str,
    provenance: Provenance,
    chunk_rows: int = 100_000,
    seed: int = 0,
) -> FileResult:
    """Score one input file into one output file (and a quarantine file for rows that could not be scored).

    Idempotent: both files appear only when complete, by rename; a retried attempt replaces them whole.
    """
    began, started_at = time.perf_counter(), time.time()
    rng = np.random.default_rng(seed)
    out, quarantine = _PartialParquet(output_url), _PartialParquet(quarantine_url)
    rows = scored = 0
    sample = _Sample(spec, rng)
    with ThreadPoolExecutor(1) as hashing:  # hashlib lets go of the GIL: the digest costs no scoring time
        digest = hashing.submit(file_digest, url)
        try:
            for table in read_chunks(url, chunk_rows):
                ok, outputs, reasons = score_table(model, spec, table)
                numbers = np.arange(rows, rows + table.num_rows, dtype=np.int64)
                everything = bool(ok.all())
                if everything or ok.any():
                    kept = numbers if everything else numbers[ok]
                    columns = {name: _arrow(values) for name, values in outputs.items()}
                    out.write(pa.table({**columns, **_provenance(provenance, url, kept)}))
                    sample.add(table if everything else table.filter(_arrow(ok)), outputs)
                if not everything:
                    rejected = table.filter(_arrow(~ok))
                    quarantine.write(
                        pa.table(_quarantined(rejected, spec, reasons, provenance, url, numbers[~ok]))
                    )
                rows += table.num_rows
                scored += int(ok.sum())
            out.commit()
            has_quarantine = quarantine.commit()
        except BaseException:
            out.discard()
            quarantine.discard()
            raise
        input_digest = digest.result()
    return FileResult(
        input_file=url,
        output_file=output_url,
        quarantine_file=quarantine_url if has_quarantine else None,
        input_digest=input_digest,
        rows=rows,
        scored=scored,
        quarantined=rows - scored,
        seconds=time.perf_counter() - began,
        started_at=started_at,
        finished_at=time.time(),
        sample=sample.table(),
    )


def put_model(output_url: str, name: str, version: str, onnx: bytes) -> str:
    """Write the ONNX file under the output (where every worker can read it, as it writes there); its URL."""
    fs, root = fsspec.core.url_to_fs(output_url)
    path = posixpath.join(root, MODEL_DIR, f"{name}-v{version}.onnx")
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(onnx)
    return str(fs.unstrip_protocol(path)) if "file" not in _protocols(fs) else path


def _protocols(fs: Any) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def discard_partials(output_url: str) -> list[str]:
    """Remove what attempts lost mid-file (a killed worker) left under their temporary names."""
    fs, root = fsspec.core.url_to_fs(output_url)
    left = [p for p in fs.glob(posixpath.join(root, "**", "*.partial-*")) if fs.isfile(p)]
    for path in left:
        fs.rm(path)
    return left


def _constant(value: str, rows: int) -> pa.DictionaryArray:
    """One value for every row, stored once (a dictionary of one entry)."""
    text = value.encode()
    entry = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(np.array([0, len(text)], np.int32)), pa.py_buffer(text)]
    )  # pa.array([value]) would import pandas, as in ``_arrow``
    return pa.DictionaryArray.from_arrays(_arrow(np.zeros(rows, dtype=np.int32)), entry)


def _provenance(provenance: Provenance, url: str, numbers: np.ndarray) -> dict[str, Any]:
    rows = len(numbers)
    return {
        "model_name": _constant(provenance.model_name, rows),
        "model_version": _constant(provenance.model_version, rows),
        "run_id": _constant(provenance.run_id, rows),
        "batch_id": _constant(provenance.batch_id, rows),
        "input_file": _constant(url, rows),
        "row_number": _arrow(numbers),
    }


def _quarantined(
    table: pa.Table,
    spec: DatasetSpec,
    reasons: np.ndarray,
    provenance: Provenance,
    url: str,
    numbers: np.ndarray,
) -> dict[str, Any]:
    """The rows set aside: where they came from, why, and their feature values as JSON (any type kept)."""
    rows = table.select(spec.feature_names).to_pylist()
    return {
        "input_file": [url] * len(rows),
        "row_number": numbers,
        "reason": [str(r) for r in reasons],
        "values": [json.dumps(row, default=str) for row in rows],
        "batch_id": [provenance.batch_id] * len(rows),
    }


class _Sample:
    """A uniform sample without replacement of every scored row of a file, in bounded memory: each row
    gets a random key and the ``SAMPLE_ROWS`` smallest keys seen so far are kept (bottom-k sampling)."""

    def __init__(self, spec: DatasetSpec, rng: np.random.Generator) -> None:
        self.spec, self.rng = spec, rng
        self.keys = np.empty(0)
        self.rows: pa.Table | None = None

    def add(self, table: pa.Table, outputs: dict[str, np.ndarray]) -> None:
        keys = self.rng.random(table.num_rows)
        # Only a key below the largest kept so far can enter the sample: once it is full, few rows do.
        take = (
            np.flatnonzero(keys < self.keys.max()) if len(self.keys) >= SAMPLE_ROWS else np.arange(len(keys))
        )
        if len(take) > SAMPLE_ROWS:
            take = take[np.argpartition(keys[take], SAMPLE_ROWS)[:SAMPLE_ROWS]]
        prediction = (outputs["label"] if "label" in outputs else outputs["value"])[take]
        taken = _arrow(take)
        # As scored: numbers parsed (a CSV's chunk may hold a column as text), categories as text.
        columns = {
            f.name: _arrow(_numbers(table.column(f.name).take(taken)))
            if f.kind == "numeric"
            else table.column(f.name).take(taken).cast(pa.string())
            for f in self.spec.features
        }
        rows = pa.table({**columns, "prediction": _arrow(prediction)})
        keys = np.concatenate([self.keys, keys[take]])
        rows = rows if self.rows is None else pa.concat_tables([self.rows, rows])
        if len(keys) > SAMPLE_ROWS:
            kept = np.argpartition(keys, SAMPLE_ROWS)[:SAMPLE_ROWS]
            keys, rows = keys[kept], rows.take(_arrow(kept))
        self.keys, self.rows = keys, rows

    def table(self) -> pa.Table:
        return self.rows if self.rows is not None else pa.table({})
