"""What runs on the Dask workers of a batch, in a module of its own: the ``batch-score-files`` sub-flow and
its task. A worker unpickles the flow of the run it works for, so this module imports Prefect, prefect-dask
and ``models/`` only (not MLflow, Great Expectations, scikit-learn or the other flows): measured, a worker
that scored a file held 494 MiB with the parent flow's imports, against 184 MiB for these.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import fsspec
import pyarrow as pa
from prefect import flow, task
from prefect.cache_policies import NONE
from prefect_dask.task_runners import DaskTaskRunner

from models import batch, datasets
from models.scoring import OnnxModel
from models.settings import Settings


def dask_options(settings: Settings) -> dict[str, Any]:
    """The scheduler at ``dask_address``, or a local cluster of ``batch_workers`` processes."""
    if settings.dask_address:
        return {"address": settings.dask_address}
    return {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {
            "n_workers": settings.batch_workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
            "silence_logs": logging.WARNING,  # a line per worker start and stop otherwise
        },
    }


class BatchTaskRunner(DaskTaskRunner):
    """prefect-dask's runner, its cluster chosen from the settings when a run starts (not at import)."""

    def duplicate(self) -> BatchTaskRunner:
        # The scheduler and nannies of a local cluster run in this process: a line per worker start, task
        # hand-off and stop in the flow's log otherwise.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        return type(self)(**dask_options(Settings()))


@functools.lru_cache(maxsize=4)
def onnx_model(model_url: str) -> OnnxModel:
    """One onnxruntime session per model per worker process, however many files it scores; with its arena,
    which keeps the buffers of one call (``batch.MODEL_CALL_ROWS`` rows) instead of mapping them anew."""
    with fsspec.open(model_url, "rb") as handle:
        return OnnxModel.load(handle.read(), arena=True)


@task(cache_policy=NONE, retries=2, retry_delay_seconds=1)
def score_partition(
    model_url: str,
    dataset: str,
    url: str,
    output_url: str,
    quarantine_url: str,
    provenance: batch.Provenance,
    chunk_rows: int,
) -> batch.FileResult:
    """One input file, on whichever Dask worker runs it; a retry replaces a lost attempt's files whole."""
    # Arrow's own pool keeps what a chunk freed: with malloc's, a worker's peak stays near one chunk's.
    pa.set_memory_pool(pa.jemalloc_memory_pool())
    return batch.score_file(
        onnx_model(model_url),
        datasets.get_spec(dataset),
        url,
        output_url,
        quarantine_url,
        provenance,
        chunk_rows,
    )


# prefect-dask's runner is a TaskRunner of its own future type, which Prefect's annotation does not admit.
@flow(name="batch-score-files", task_runner=BatchTaskRunner())  # type: ignore[arg-type]
def score_files(
    model_url: str,
    dataset: str,
    outputs: dict[str, str],
    quarantine: dict[str, str],
    provenance: batch.Provenance,
    chunk_rows: int,
) -> list[batch.FileResult]:
    """Every file at once on Dask, as many at a time as it has workers."""
    futures = [
        score_partition.submit(model_url, dataset, url, output_url, quarantine[url], provenance, chunk_rows)
        for url, output_url in outputs.items()
    ]
    return [future.result() for future in futures]
