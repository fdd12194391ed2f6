"""Batch scoring of whole files with the served artifact: read in chunks, set aside the rows that cannot be
scored (with the reason), score the rest through the service's own encoding (``features.feeds_from_columns``)
and decoding (``scoring.output_columns``), write Parquet with provenance, committed by rename.

No framework: pandas, pyarrow, fsspec and onnxruntime. ``flows/batch.py`` adds Prefect, MLflow and Dask.
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
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.datasets import DatasetSpec
from models.features import feeds_from_columns
from models.scoring import OnnxModel, output_columns, predictions

READABLE = (".csv", ".parquet", ".pq")
PROVENANCE_COLUMNS = ("model_name", "model_version", "run_id", "batch_id", "input_file", "row_number")
QUARANTINE_DIR = "_quarantine"
SAMPLE_PER_CHUNK = 2000  # rows of each chunk kept for the skew report


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
    sample: pd.DataFrame  # scored rows' features and prediction, for the skew report


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
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    return sorted(p if local else fs.unstrip_protocol(p) for p in found)


def output_names(files: list[str]) -> dict[str, str]:
    """Each input's output path relative to the output folder: the input's own layout, as ``.parquet``."""
    paths = [fsspec.core.url_to_fs(f)[1] for f in files]
    root = posixpath.dirname(paths[0]) if len(paths) == 1 else posixpath.commonpath(paths)
    return {
        file: posixpath.splitext(posixpath.relpath(path, root))[0] + ".parquet"
        for file, path in zip(files, paths, strict=True)
    }


def read_chunks(url: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows, ``chunk_rows`` at a time (Parquet by batches of its row groups): never all at once."""
    with fsspec.open(url, "rb") as handle:
        if url.lower().endswith(".csv"):
            yield from pd.read_csv(handle, chunksize=chunk_rows)
        else:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()


def file_digest(url: str, block: int = 1 << 20) -> str:
    """A digest of the file's bytes (the batch's data, as recorded for traceability)."""
    hasher = hashlib.sha256()
    with fsspec.open(url, "rb") as handle:
        while chunk := handle.read(block):
            hasher.update(chunk)
    return hasher.hexdigest()[:16]


def _mark(reasons: np.ndarray, mask: np.ndarray, values: Any, problem: str) -> None:
    """Give each row under ``mask`` that has no reason yet ``problem`` formatted with its value."""
    for i in np.flatnonzero(mask & (reasons == None)):  # noqa: E711 - elementwise on an object array
        reasons[i] = problem.format(values[i])


def check_rows(frame: pd.DataFrame, spec: DatasetSpec) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Why each row cannot be scored (None: it can; the first problem found), and the features as columns.

    Nulls, values that are not numbers or not finite, values outside the range the training data's
    validation allows, unknown categories: the rules the data suite applies to training data, per row.
    """
    reasons = np.full(len(frame), None, dtype=object)
    columns: dict[str, np.ndarray] = {}
    for feature in spec.features:
        name, raw = feature.name, frame[feature.name].to_numpy(dtype=object)
        null = frame[name].isna().to_numpy()
        _mark(reasons, null, raw, f"{name}: null")
        if feature.kind == "numeric":
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            _mark(reasons, ~null & ~np.isfinite(values), raw, f"{name}: not a finite number: {{!r:.40}}")
            with np.errstate(invalid="ignore"):
                if feature.min_value is not None:
                    low = f"{name}: {{:g}} is below {feature.min_value:g}, the lower bound of its data suite"
                    _mark(reasons, values < feature.min_value, values, low)
                if feature.max_value is not None:
                    high = f"{name}: {{:g}} is above {feature.max_value:g}, the upper bound of its data suite"
                    _mark(reasons, values > feature.max_value, values, high)
            columns[name] = values
        else:
            text = np.fromiter((isinstance(v, str) for v in raw), dtype=bool, count=len(raw))
            _mark(reasons, ~null & ~text, raw, f"{name}: not a string: {{!r:.40}}")
            if feature.categories:
                unknown = ~null & text & ~np.isin(raw, list(feature.categories))
                _mark(reasons, unknown, raw, f"{name}: unknown category {{!r:.40}}")
            columns[name] = raw
    return reasons, columns


def score_frame(
    model: OnnxModel, spec: DatasetSpec, frame: pd.DataFrame
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Score the rows of ``frame`` that can be: (which were scored, their outputs as columns, reasons)."""
    reasons, columns = check_rows(frame, spec)
    ok = reasons == None  # noqa: E711
    outputs: dict[str, np.ndarray] = {}
    if ok.any():
        feeds = feeds_from_columns({name: values[ok] for name, values in columns.items()}, model.inputs)
        outputs = output_columns(model.run(feeds), model.classes)
    return ok, outputs, {"reason": reasons[~ok]}


def golden_mismatches(
    model: OnnxModel, spec: DatasetSpec, golden: dict[str, Any], tolerance: float
) -> list[str]:
    """Batch scoring of the version's golden rows against the answers the version gave them at conversion
    (the same rows and answers the service checks itself against before it answers anyone)."""
    frame = pd.DataFrame(golden["records"])
    ok, outputs, reasons = score_frame(model, spec, frame)
    if not ok.all():
        return [f"golden rows not scorable: {sorted(set(reasons['reason']))[:3]}"]
    expected = golden.get("probabilities") if model.classes is not None else golden.get("values")
    if model.classes is not None:
        got = np.column_stack([outputs[f"probability_{c}"] for c in model.classes])
        labels = [p["label"] for p in predictions([outputs["label"], got], model.classes)]
        if labels != golden["labels"]:
            return [f"labels differ on golden rows: {labels[:5]} vs {golden['labels'][:5]}"]
    else:
        got = outputs["value"]
    diff = float(np.max(np.abs(np.asarray(got) - np.asarray(expected)))) if len(frame) else 0.0
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
            self.writer = pq.ParquetWriter(self.handle, table.schema)
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
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    out, quarantine = _PartialParquet(output_url), _PartialParquet(quarantine_url)
    rows = scored = 0
    samples: list[pd.DataFrame] = []
    try:
        for frame in read_chunks(url, chunk_rows):
            ok, outputs, rejected = score_frame(model, spec, frame)
            numbers = np.arange(rows, rows + len(frame), dtype=np.int64)
            if ok.any():
                columns = {**outputs, **_provenance(provenance, url, numbers[ok])}
                out.write(pa.table(columns))
                samples.append(_sample(frame[ok], spec, outputs, rng))
            if not ok.all():
                quarantine.write(
                    pa.table(_quarantined(frame[~ok], spec, rejected, provenance, url, numbers[~ok]))
                )
            rows += len(frame)
            scored += int(ok.sum())
        out.commit()
        has_quarantine = quarantine.commit()
    except BaseException:
        out.discard()
        quarantine.discard()
        raise
    return FileResult(
        input_file=url,
        output_file=output_url,
        quarantine_file=quarantine_url if has_quarantine else None,
        input_digest=file_digest(url),
        rows=rows,
        scored=scored,
        quarantined=rows - scored,
        seconds=time.perf_counter() - began,
        sample=pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(),
    )


def discard_partials(output_url: str) -> list[str]:
    """Remove what attempts lost mid-file (a killed worker) left under their temporary names."""
    fs, root = fsspec.core.url_to_fs(output_url)
    left = [p for p in fs.glob(posixpath.join(root, "**", "*.partial-*")) if fs.isfile(p)]
    for path in left:
        fs.rm(path)
    return left


def _provenance(provenance: Provenance, url: str, numbers: np.ndarray) -> dict[str, Any]:
    n = len(numbers)
    return {
        "model_name": pa.array([provenance.model_name] * n, pa.string()).dictionary_encode(),
        "model_version": pa.array([provenance.model_version] * n, pa.string()).dictionary_encode(),
        "run_id": pa.array([provenance.run_id] * n, pa.string()).dictionary_encode(),
        "batch_id": pa.array([provenance.batch_id] * n, pa.string()).dictionary_encode(),
        "input_file": pa.array([url] * n, pa.string()).dictionary_encode(),
        "row_number": numbers,
    }


def _quarantined(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    rejected: dict[str, np.ndarray],
    provenance: Provenance,
    url: str,
    numbers: np.ndarray,
) -> dict[str, Any]:
    """The rows set aside: where they came from, why, and their feature values as JSON (any type kept)."""
    values = frame[spec.feature_names].astype(object).where(frame[spec.feature_names].notna(), None)
    return {
        "input_file": [url] * len(frame),
        "row_number": numbers,
        "reason": [str(r) for r in rejected["reason"]],
        "values": [json.dumps(row, default=str) for row in values.to_dict(orient="records")],
        "batch_id": [provenance.batch_id] * len(frame),
    }


def _sample(
    frame: pd.DataFrame, spec: DatasetSpec, outputs: dict[str, np.ndarray], rng: np.random.Generator
) -> pd.DataFrame:
    take = np.sort(rng.choice(len(frame), size=min(SAMPLE_PER_CHUNK, len(frame)), replace=False))
    sample = frame[spec.feature_names].iloc[take].reset_index(drop=True)
    prediction = outputs["label"] if "label" in outputs else outputs["value"]
    sample["prediction"] = prediction[take]
    return sample
