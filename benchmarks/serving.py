"""Serving benchmark: our BentoML service against what users would pick instead, in one run.

    make bench-serving                                  # full run, about 35 minutes
    make bench-serving SERVING_FLAGS=--all-peers        # Ray Serve too
    uv run python -m benchmarks.serving --seconds 5 --soak-minutes 0   # a short run

Trains the reference model (breast-cancer data, StandardScaler + HistGradientBoostingClassifier(max_iter=100,
random_state=0)) through the real pipeline into a throwaway MLflow store, then starts one server after
another on 127.0.0.1 and loads each with wrk (closed loop, single-row requests at 1, 8 and 32 connections,
then one 1,000-row request as JSON and, where the server speaks it, as binary tensors): our service as
shipped (ONNX, provenance, inference log on; `/predict` and the OIP route), FastAPI + ``joblib.load`` +
``model.predict``, ``mlflow models serve``, the peers of ``benchmarks/peers`` (a hand-written FastAPI +
onnxruntime server, KServe, MLServer, PyTriton, Ray Serve with ``--all-peers``; each from a venv of its own,
1 and 2 workers, serving the same ONNX file over the OIP) and nginx answering a fixed 200 (the HTTP floor).
Before any server is timed its answers on the held-out rows are checked equal to onnxruntime's in process
on that file. Each Python server is started a second time with no bytecode to find (its cold start without
bytecode). Prints Markdown tables: every server with ratios against FastAPI + joblib, ours against the best
peer cell by cell and against onnxruntime in process, and the serving issue's targets as ratios of the same
run, and the serving tree's memory per model and per version held (``benchmarks/memory.py``); writes them to
``benchmarks/results/serving.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import grpc_load, memory, wrk
from benchmarks.report import publish
from flows.processes import StartupError, free_port, supervised, wait_http

RESULTS = Path(__file__).parent / "results"
START_LIMIT_S = 180.0  # a server not answering its ready URL by then fails the benchmark
RECIPE = "hist_gradient_boosting_scaled"
CONNECTIONS = (1, 8, 32)
BATCH_ROWS = 1000


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    children = subprocess.run(
        ["ps", "-o", "pid=,ppid=,rss=", "-A"], capture_output=True, text=True, check=True
    ).stdout
    table = [tuple(int(x) for x in line.split()) for line in children.splitlines() if line.strip()]
    wanted, total = {pid}, 0
    changed = True
    while changed:
        changed = False
        for child, parent, _ in table:
            if parent in wanted and child not in wanted:
                wanted.add(child)
                changed = True
    total = sum(rss for child, _, rss in table if child in wanted)
    return total / 1024


@dataclass
class Server:
    """One HTTP server under test: how to start it, where to send, what to send."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready_url: str
    url: str
    single_body: bytes
    batch_body: bytes
    oip_url: str | None = None  # the Open Inference Protocol route, when the server has one
    oip_single: bytes = b""
    oip_batch: bytes = b""
    oip_binary_batch: tuple[bytes, dict[str, str]] | None = None  # binary tensor data extension
    grpc_target: str | None = None  # host:port of its OIP gRPC service, when it has one
    grpc_single: bytes = b""  # serialized ModelInferRequest, raw contents
    grpc_batch: bytes = b""
    peer: bool = False  # a server a user would pick instead of ours (the ratios' denominators)
    floor: bool = False  # a fixed answer, no model: the HTTP floor of the machine (single rows only)
    python: bool = True  # a Python server: its cold start is measured again without bytecode
    results: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def started(
    server: Server, log: Path, key: str = "cold_start_s", env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    began = time.perf_counter()
    with supervised(server.command, log, {**server.env, **(env or {})}, stop_timeout_s=30) as process:
        wait_http(
            server.ready_url,
            START_LIMIT_S,
            exited=lambda: process.poll() is not None,
            what=server.name,
            setting=f"benchmarks.serving.START_LIMIT_S={START_LIMIT_S:g}",
            log_file=log,
            interval_s=0.05,
        )
        server.results[key] = time.perf_counter() - began
        yield process


def without_bytecode(workdir: Path) -> dict[str, str]:
    """An environment in which Python finds no bytecode and writes none: its cache is looked for only under
    an empty prefix (every module compiled from source, as on an install without bytecode)."""
    prefix = Path(tempfile.mkdtemp(prefix="no-bytecode-", dir=workdir))
    return {"PYTHONPYCACHEPREFIX": str(prefix), "PYTHONDONTWRITEBYTECODE": "1"}


JSON_HEADERS = {"content-type": "application/json"}


def batch_rows_per_s(
    url: str, body: bytes, workdir: Path, seconds: float, headers: dict[str, str] = JSON_HEADERS
) -> float:
    """Rows per second of 1,000-row requests on one connection (wrk, closed loop): one request at a time."""
    httpx.post(url, content=body, headers=headers, timeout=60).raise_for_status()  # a correct answer first
    path = workdir / "batch-body.bin"
    path.write_bytes(body)
    result = wrk.run(url, path, 1, seconds, workdir, headers)
    if result.errors:
        raise RuntimeError(f"{result.errors} of {result.requests} 1,000-row requests to {url} failed")
    return result.rps * BATCH_ROWS


def soak(url: str, body: Path, pid: int, minutes: float, workdir: Path) -> dict[str, Any]:
    """Steady load at 8 connections, RSS sampled every 10 s; first sample taken after a minute's warm-up."""
    samples: list[float] = []
    rounds = max(1, round(minutes * 6))
    results = []
    for _ in range(rounds):
        results.append(wrk.run(url, body, 8, 10, workdir))
        samples.append(tree_rss_mib(pid))
    warm = samples[min(len(samples) - 1, 6) :] or samples
    return {
        "minutes": minutes,
        "requests": sum(r.requests for r in results),
        "errors": sum(r.errors for r in results),
        "rss_first_mib": warm[0],
        "rss_last_mib": warm[-1],
        "rss_max_mib": max(warm),
        "p99_first_ms": results[0].p99_ms,
        "p99_last_ms": results[-1].p99_ms,
    }


@dataclass(frozen=True)
class Expected:
    """Held-out rows as one OIP request, and what onnxruntime in process answers them (every server's
    answers must equal these before it is timed: ours serves that ONNX file, the peers load it too)."""

    body: bytes
    outputs: dict[str, np.ndarray]
    grpc_body: bytes = b""  # the same rows as a gRPC ModelInferRequest (raw contents)


def check_answers(url: str, name: str, expected: Expected, tolerance: float = 1e-9) -> None:
    answer = httpx.post(url, content=expected.body, headers=JSON_HEADERS, timeout=60)
    answer.raise_for_status()
    outputs = answer.json().get("outputs")
    if not isinstance(outputs, list):
        raise RuntimeError(f"{name}: no OIP outputs in its answer to the held-out rows: {answer.text[:200]}")
    got = {o["name"]: np.asarray(o["data"]) for o in outputs}
    for output, values in expected.outputs.items():
        if output not in got or got[output].size != values.size:
            raise RuntimeError(f"{name}: output {output!r} missing or of another size on the held-out rows")
        if not np.allclose(got[output].ravel(), values.ravel(), rtol=0, atol=tolerance):
            worst = float(np.max(np.abs(got[output].ravel() - values.ravel())))
            raise RuntimeError(f"{name}: {output!r} differs from onnxruntime's by up to {worst:.3g}")


def check_grpc_answers(target: str, name: str, expected: Expected, tolerance: float = 1e-9) -> None:
    """The server's gRPC answers to the held-out rows equal onnxruntime's in process."""
    got = grpc_load.outputs_of(grpc_load.call(target, expected.grpc_body))
    for output, values in expected.outputs.items():
        if output not in got or got[output].size != values.size:
            raise RuntimeError(
                f"{name}: gRPC output {output!r} missing or of another size on the held-out rows"
            )
        if not np.allclose(got[output].ravel(), values.ravel(), rtol=0, atol=tolerance):
            worst = float(np.max(np.abs(got[output].ravel() - values.ravel())))
            raise RuntimeError(f"{name}: gRPC {output!r} differs from onnxruntime's by up to {worst:.3g}")


def measure_grpc(server: Server, seconds: float, batch_seconds: float, expected: Expected) -> None:
    """Single rows at 1, 8 and 32 channels, then 1,000-row requests on one, all with raw contents."""
    assert server.grpc_target is not None
    check_grpc_answers(server.grpc_target, server.name, expected)
    grpc_load.run(server.grpc_target, server.grpc_single, 8, min(seconds, 3))  # warm-up
    for connections in CONNECTIONS:
        result = grpc_load.run(server.grpc_target, server.grpc_single, connections, seconds)
        server.results[f"grpc_c{connections}"] = result
    batch = grpc_load.run(server.grpc_target, server.grpc_batch, 1, batch_seconds)
    if batch.errors:
        raise RuntimeError(f"{batch.errors} of {batch.requests} 1,000-row gRPC calls failed")
    server.results["grpc_batch_rows_per_s"] = batch.rps * BATCH_ROWS


def measure_server(
    server: Server, seconds: float, workdir: Path, expected: Expected, soak_minutes: float = 0
) -> None:
    log = workdir / f"{server.name.replace(' ', '-')}.log"
    single = workdir / "single.json"
    single.write_bytes(server.single_body)
    with started(server, log) as process:
        check = httpx.post(
            server.url, content=server.single_body, headers={"content-type": "application/json"}
        )
        check.raise_for_status()
        if server.oip_url or server.peer:
            check_answers(server.oip_url or server.url, server.name, expected)
        time.sleep(1.0)
        server.results["idle_rss_mib"] = tree_rss_mib(process.pid)
        wrk.run(server.url, single, 8, min(seconds, 3), workdir)  # warm-up
        for connections in CONNECTIONS:
            server.results[f"c{connections}"] = wrk.run(server.url, single, connections, seconds, workdir)
        batch_seconds = min(seconds, 10)
        if not server.floor:
            server.results["batch_rows_per_s"] = batch_rows_per_s(
                server.url, server.batch_body, workdir, batch_seconds
            )
        if server.oip_url:
            oip_single = workdir / "oip-single.json"
            oip_single.write_bytes(server.oip_single)
            for connections in CONNECTIONS:
                server.results[f"oip_c{connections}"] = wrk.run(
                    server.oip_url, oip_single, connections, seconds, workdir
                )
            server.results["oip_batch_rows_per_s"] = batch_rows_per_s(
                server.oip_url, server.oip_batch, workdir, batch_seconds
            )
        if server.oip_binary_batch:
            body, headers = server.oip_binary_batch
            server.results["oip_binary_rows_per_s"] = batch_rows_per_s(
                server.oip_url or server.url, body, workdir, batch_seconds, headers
            )
        if server.grpc_target:
            measure_grpc(server, seconds, batch_seconds, expected)
        server.results["loaded_rss_mib"] = tree_rss_mib(process.pid)
        if soak_minutes > 0:
            server.results["soak"] = soak(server.url, single, process.pid, soak_minutes, workdir)
    if server.python:
        with started(server, log, "cold_start_no_bytecode_s", without_bytecode(workdir)):
            pass


def oip_body(rows: list[dict[str, Any]], features: list[str]) -> bytes:
    inputs = [
        {"name": name, "shape": [len(rows), 1], "datatype": "FP64", "data": [r[name] for r in rows]}
        for name in features
    ]
    return json.dumps({"inputs": inputs}).encode()


def in_process(onnx_path: Path, feeds: dict[str, np.ndarray], seconds: float) -> dict[str, Any]:
    from models.runtime import make_session

    session = make_session(onnx_path)
    rows = len(next(iter(feeds.values())))
    singles = [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(rows)]
    timings: list[float] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        tick = time.perf_counter()
        session.run(None, singles[i % rows])
        timings.append(time.perf_counter() - tick)
        i += 1
    batch = {k: np.resize(v, (BATCH_ROWS, *v.shape[1:])) for k, v in feeds.items()}
    batch_timings = []
    for _ in range(20):
        tick = time.perf_counter()
        session.run(None, batch)
        batch_timings.append(time.perf_counter() - tick)
    p50, p99 = np.percentile(np.array(timings) * 1000, [50, 99])
    return {
        "calls_per_s": len(timings) / sum(timings),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "batch_rows_per_s": BATCH_ROWS / statistics.median(batch_timings),
    }


def train_reference(state: Path) -> tuple[Any, str]:
    """The reference model through the real pipeline (no deploy); returns settings and its version."""
    os.environ["MLOPS_STATE_DIR"] = str(state)
    from flows.cli import use_state_dir_for_prefect
    from models.settings import Settings

    settings = Settings()
    use_state_dir_for_prefect(settings)
    from flows.gate import GateConfig
    from flows.training import training_pipeline

    result = training_pipeline(
        recipe=RECIPE, deploy_target="none", gate_config=GateConfig(latency_p99_ms=100)
    )
    if result.verdict != "champion" or result.version is None:
        raise RuntimeError(f"the reference model did not become champion: {result}")
    return settings, result.version


def peer_servers(
    onnx_path: Path,
    name: str,
    oip_single: bytes,
    oip_batch: bytes,
    oip_binary: tuple[bytes, dict[str, str]],
    grpc_bodies: tuple[bytes, bytes],
    optional: bool,
) -> list[Server]:
    """Each peer with 1 and 2 workers, from its own venv (installed on first use)."""
    from benchmarks import peers

    found = []
    for peer in peers.available(optional):
        peers.ensure_venv(peer)
        for workers in (1, 2):
            port, grpc_port = free_port(), free_port() if peer.grpc else None
            found.append(
                Server(
                    name=f"{peer.label}, {workers} worker{'s' if workers > 1 else ''}",
                    command=peer.command(onnx_path, name, port, workers, grpc_port),
                    env={},
                    ready_url=f"http://127.0.0.1:{port}/v2/health/ready",
                    url=f"http://127.0.0.1:{port}/v2/models/{name}/infer",
                    single_body=oip_single,
                    batch_body=oip_batch,
                    oip_binary_batch=oip_binary if peer.binary else None,
                    grpc_target=f"127.0.0.1:{grpc_port}" if grpc_port else None,
                    grpc_single=grpc_bodies[0],
                    grpc_batch=grpc_bodies[1],
                    peer=True,
                )
            )
    return found


NGINX_CONF = """worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type application/json; return 200 '{{"ready": true}}'; }}
    }}
}}
"""


def nginx_floor(workdir: Path, single_body: bytes) -> list[Server]:
    """nginx answering every request with a fixed 200 (2 worker processes, no access log): the fastest
    any HTTP server answers on this machine, when nginx is installed (make tools)."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return []
    prefix, port = workdir / "nginx", free_port()
    prefix.mkdir()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=port))
    url = f"http://127.0.0.1:{port}"
    return [
        Server(
            name="nginx, fixed 200 answer (the HTTP floor)",
            command=[nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
            env={},
            ready_url=f"{url}/v2/health/ready",
            url=f"{url}/v2/models/floor/infer",
            single_body=single_body,
            batch_body=b"",
            floor=True,
            python=False,
        )
    ]


def servers(
    settings: Any, version: str, workdir: Path, optional_peers: bool = False
) -> tuple[list[Server], Path, dict[str, np.ndarray], Expected]:
    import joblib
    import mlflow.sklearn

    from flows.deploy import LocalService
    from flows.tracking import connect
    from models import datasets
    from serving.model import load_alias
    from serving.protocol import binary_request

    connect(settings)  # points mlflow at the store for load_model
    spec = datasets.BREAST_CANCER
    holdout = datasets.split(datasets.load_frame(datasets.demo_source(spec.name)), spec).holdout
    row = datasets.records(holdout.head(1), spec)[0]
    rows = datasets.records(holdout.sample(BATCH_ROWS, replace=True, random_state=0), spec)
    features = list(spec.feature_names)
    records_single = json.dumps({"records": row}).encode()
    records_batch = json.dumps({"records": rows}).encode()

    model = load_alias(settings.resolved_tracking_uri, settings.model_name, workdir / "cache")
    onnx_path = next((workdir / "cache").rglob("*.onnx"))
    feeds = model.feeds(datasets.records(holdout, spec))
    name = settings.model_name
    expected = Expected(
        oip_body(datasets.records(holdout, spec), features),
        dict(zip(model.output_names, model.run(feeds), strict=True)),
        grpc_load.request_bytes(name, feeds),
    )
    oip_single, oip_batch = oip_body([row], features), oip_body(rows, features)
    columns = {n: np.array([r[n] for r in rows]) for n in features}
    grpc_bodies = (grpc_load.request_bytes(name, {n: [row[n]] for n in features}),
                   grpc_load.request_bytes(name, columns))  # fmt: skip
    oip_binary = binary_request(columns)

    sklearn_model = mlflow.sklearn.load_model(f"models:/{settings.model_name}/{version}")
    joblib.dump(sklearn_model, workdir / "model.joblib")

    bin_dir = Path(sys.executable).parent
    ours_settings = settings.model_copy(update={"serve_port": free_port(), "grpc_port": free_port()})
    ours = LocalService(ours_settings)
    ours_url = ours_settings.serve_url
    fastapi_port, mlflow_port = free_port(), free_port()
    return (
        [
            Server(
                name="ours (BentoML + ONNX)",
                command=ours.command(),
                env=ours.environment(),
                ready_url=f"{ours_url}/readyz",
                url=f"{ours_url}/predict",
                single_body=records_single,
                batch_body=records_batch,
                oip_url=f"{ours_url}/v2/models/{settings.model_name}/infer",
                oip_single=oip_single,
                oip_batch=oip_batch,
                oip_binary_batch=oip_binary,
                grpc_target=f"127.0.0.1:{ours_settings.grpc_port}",
                grpc_single=grpc_bodies[0],
                grpc_batch=grpc_bodies[1],
            ),
            Server(
                name="FastAPI + joblib",
                command=[
                    str(bin_dir / "uvicorn"),
                    "benchmarks.baselines.fastapi_joblib:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(fastapi_port),
                    "--workers",
                    "1",
                ],
                env={"MODEL_PATH": str(workdir / "model.joblib")},
                ready_url=f"http://127.0.0.1:{fastapi_port}/health",
                url=f"http://127.0.0.1:{fastapi_port}/predict",
                single_body=records_single,
                batch_body=records_batch,
            ),
            Server(
                name="mlflow models serve",
                command=[
                    str(bin_dir / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{settings.model_name}/{version}",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(mlflow_port),
                ],
                env={  # it runs `uvicorn` from the PATH
                    "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
                    "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
                },
                ready_url=f"http://127.0.0.1:{mlflow_port}/ping",
                url=f"http://127.0.0.1:{mlflow_port}/invocations",
                single_body=json.dumps({"dataframe_records": [row]}).encode(),
                batch_body=json.dumps({"dataframe_records": rows}).encode(),
            ),
            *peer_servers(onnx_path, name, oip_single, oip_batch, oip_binary, grpc_bodies, optional_peers),
            *nginx_floor(workdir, oip_single),
        ],
        onnx_path,
        feeds,
        expected,
    )


def versions() -> str:
    names = ("bentoml", "onnxruntime", "scikit-learn", "mlflow", "fastapi", "uvicorn")
    return ", ".join(f"{n} {metadata.version(n)}" for n in names)


def _flatten(server: Server) -> dict[str, float]:
    """A server's figures under one key each: req/s and p99 per route and connection count, rows/s, RSS."""
    res = server.results
    flat = {k: v for k, v in res.items() if isinstance(v, float | int)}
    for c in CONNECTIONS:
        # a peer's only route is the OIP one: it stands for both of ours
        for route, key in (("predict", f"c{c}"), ("oip", f"oip_c{c}" if f"oip_c{c}" in res else f"c{c}")):
            if key in res:
                flat[f"{route}_rps_c{c}"], flat[f"{route}_p99_c{c}"] = res[key].rps, res[key].p99_ms
        if f"grpc_c{c}" in res:
            flat[f"grpc_rps_c{c}"], flat[f"grpc_p99_c{c}"] = res[f"grpc_c{c}"].rps, res[f"grpc_c{c}"].p99_ms
    if server.peer:
        flat["oip_batch_rows_per_s"] = res.get("batch_rows_per_s", 0.0)
    return flat


LEADER_CELLS: tuple[tuple[str, str, bool], ...] = (
    *(
        (f"single row, {label}, {c} conns, {unit}", f"{route}_{key}_c{c}", key == "rps")
        for c in CONNECTIONS
        for route, label in (("predict", "`/predict`"), ("oip", "OIP"))
        for key, unit in (("rps", "req/s"), ("p99", "p99 ms"))
    ),
    ("1,000 rows, `/predict`, rows/s", "batch_rows_per_s", True),
    ("1,000 rows, OIP JSON, rows/s", "oip_batch_rows_per_s", True),
    ("1,000 rows, OIP binary tensors, rows/s", "oip_binary_rows_per_s", True),
    *(
        (f"single row, gRPC raw contents, {c} conns, {unit}", f"grpc_{key}_c{c}", key == "rps")
        for c in CONNECTIONS
        for key, unit in (("rps", "calls/s"), ("p99", "p99 ms"))
    ),
    ("1,000 rows, gRPC raw contents, rows/s", "grpc_batch_rows_per_s", True),
    ("idle RSS of the tree, MiB", "idle_rss_mib", False),
    ("RSS after load, MiB", "loaded_rss_mib", False),
    ("cold start with bytecode, s", "cold_start_s", False),
    ("cold start without bytecode, s", "cold_start_no_bytecode_s", False),
)


def _in_process_figure(key: str, local: dict[str, Any]) -> float | None:
    if "_rps_" in key:
        return float(local["calls_per_s"])
    if "_p99_" in key:
        return float(local["p99_ms"])
    if key.endswith("rows_per_s"):
        return float(local["batch_rows_per_s"])
    return None


def leader_table(measured: list[Server], local: dict[str, Any]) -> list[str]:
    """Ours against the best peer of the same run, cell by cell (a peer's route is the OIP one: it stands
    for both of ours), and against onnxruntime in process."""
    ours = next((s for s in measured if s.name.startswith("ours")), None)
    peers = [(s.name, _flatten(s)) for s in measured if s.peer]
    if ours is None or not peers:
        return []
    mine = _flatten(ours)
    lines = [
        "",
        "Ours against the best peer in this run (answers checked equal to in-process onnxruntime on the "
        "held-out rows before timing):",
        "",
        "| cell | ours | best peer | its figure | ours / best peer | ours / in-process |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, higher in LEADER_CELLS:
        figures = [(f[key], name) for name, f in peers if f.get(key)]
        if key not in mine or not figures:
            continue
        value, name = max(figures) if higher else min(figures)
        form = ".2f" if "_p99_" in key or "cold_start" in key else ",.0f"  # ms and s in hundredths
        local_figure = _in_process_figure(key, local)
        versus = f"{mine[key] / local_figure:.2f}x" if local_figure else ""
        ratio = mine[key] / value
        lines.append(f"| {label} | {mine[key]:{form}} | {name} | {value:{form}} | {ratio:.2f}x | {versus} |")
    return lines


@dataclass(frozen=True)
class Target:
    """One target of the serving issue: ours against a figure of the same run."""

    label: str
    ours: float
    reference: float
    least: float  # ours / reference must be at least this (higher is better) ...
    most: float | None = None  # ... or at most this (lower is better)

    @property
    def ratio(self) -> float:
        return self.ours / self.reference

    @property
    def met(self) -> bool:
        return self.ratio <= self.most if self.most is not None else self.ratio >= self.least


def targets(measured: list[Server], local: dict[str, Any]) -> list[Target]:
    """The issue's targets, each a ratio of this run: the hand-written server with 2 workers, the better
    KServe configuration for throughput and the 2-worker one (as ours) for memory, in-process onnxruntime."""
    ours = next((s for s in measured if s.name.startswith("ours")), None)
    by_name = {s.name: _flatten(s) for s in measured if s.peer}
    hand = next((f for n, f in by_name.items() if n.startswith("hand-written") and "2 workers" in n), None)
    kserve = [f for n, f in by_name.items() if n.startswith("KServe")]
    kserve_2 = next((f for n, f in by_name.items() if n.startswith("KServe") and "2 workers" in n), None)
    if ours is None:
        return []
    mine = _flatten(ours)
    found: list[Target] = []
    for c in CONNECTIONS:
        for route, label in (("predict", "`/predict`"), ("oip", "OIP")):
            rps, p99 = f"{route}_rps_c{c}", f"{route}_p99_c{c}"
            if rps not in mine:
                continue
            if hand:
                found.append(
                    Target(f"{label} {c} conns req/s >= 1.0x hand-written 2w", mine[rps], hand[rps], 1.0)
                )
                found.append(
                    Target(f"{label} {c} conns p99 <= hand-written 2w", mine[p99], hand[p99], 0, 1.0)
                )
            if kserve:
                best = max(f[rps] for f in kserve)
                found.append(Target(f"{label} {c} conns req/s >= 1.5x KServe", mine[rps], best, 1.5))
        if f"oip_rps_c{c}" in mine:
            found.append(Target(f"OIP {c} conns no slower than `/predict`", mine[f"oip_rps_c{c}"],
                                mine[f"predict_rps_c{c}"], 1.0))  # fmt: skip
    if hand and "oip_batch_rows_per_s" in mine:
        found.append(Target("1,000 rows OIP JSON >= 1.0x hand-written 2w", mine["oip_batch_rows_per_s"],
                            hand["oip_batch_rows_per_s"], 1.0))  # fmt: skip
    if "oip_binary_rows_per_s" in mine:
        found.append(Target("1,000 rows binary >= 0.6x in-process", mine["oip_binary_rows_per_s"],
                            float(local["batch_rows_per_s"]), 0.6))  # fmt: skip
    if kserve_2:
        found.append(Target("idle RSS < KServe 2w", mine["idle_rss_mib"], kserve_2["idle_rss_mib"], 0, 1.0))
    found.append(Target("cold start with bytecode < 3 s", mine["cold_start_s"], 3.0, 0, 1.0))
    return found


def targets_table(measured: list[Server], local: dict[str, Any]) -> list[str]:
    found = targets(measured, local)
    if not found:
        return []
    lines = ["", "The serving issue's targets, from this run:", "",
             "| target | ours | against | ratio | met |", "|---|---|---|---|---|"]  # fmt: skip
    for t in found:
        met = "yes" if t.met else "no"
        lines.append(f"| {t.label} | {t.ours:,.2f} | {t.reference:,.2f} | {t.ratio:.2f}x | {met} |")
    lines += ["", f"{sum(t.met for t in found)} of {len(found)} targets met."]
    return lines


def grpc_table(measured: list[Server]) -> list[str]:
    """The servers that speak the OIP over gRPC, single rows as raw contents, against ours."""
    speaking = [s for s in measured if "grpc_c1" in s.results]
    ours = next((s for s in speaking if s.name.startswith("ours")), None)
    if not speaking:
        return []
    lines = ["", "OIP over gRPC (`ModelInfer`, single rows as raw contents; load generator "
             "`benchmarks/grpc_load.py`, one channel per connection, closed loop):", "",
             "| server | conns | calls/s | p50 ms | p99 ms | errors | ours / it |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for server in speaking:
        for c in CONNECTIONS:
            r: wrk.WrkResult = server.results[f"grpc_c{c}"]
            versus = f"{ours.results[f'grpc_c{c}'].rps / r.rps:.2f}x" if ours and r.rps else ""
            lines.append(
                f"| {server.name} | {c} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} "
                f"| {versus} |"
            )
    return lines


def table(measured: list[Server], local: dict[str, Any], seconds: float) -> str:
    baseline = next(s for s in measured if s.name.startswith("FastAPI"))
    lines = [
        f"# Serving benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"load generator wrk (1 thread, closed loop) on the same machine, {seconds:g} s per cell. "
        f"{versions()}.",
        f"Reference model: StandardScaler + HistGradientBoostingClassifier(max_iter=100), recipe `{RECIPE}`.",
        "Ratios are ours / FastAPI + joblib from the same run.",
        "",
        "| server | conns | req/s | p50 ms | p99 ms | errors | ratio req/s | ratio p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for server in measured:
        for c in CONNECTIONS:
            r: wrk.WrkResult = server.results[f"c{c}"]
            b: wrk.WrkResult = baseline.results[f"c{c}"]
            lines.append(
                f"| {server.name} | {c} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | "
                f"{r.rps / b.rps:.2f}x | {r.p99_ms / b.p99_ms:.2f}x |"
            )
    for server in measured:
        for c in CONNECTIONS:
            if f"oip_c{c}" in server.results:
                r, b = server.results[f"oip_c{c}"], baseline.results[f"c{c}"]
                lines.append(
                    f"| {server.name}, OIP `/v2/models/{{name}}/infer` | {c} | {r.rps:,.0f} "
                    f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {r.rps / b.rps:.2f}x "
                    f"| {r.p99_ms / b.p99_ms:.2f}x |"
                )
    lines += grpc_table(measured)
    lines += [
        "",
        "| server | 1,000-row request rows/s | of in-process onnxruntime | cold start s | cold start "
        "without bytecode s | idle RSS MiB | RSS after load MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    limit = local["batch_rows_per_s"]
    for server in measured:
        res = server.results
        rows = res.get("batch_rows_per_s")
        no_bytecode = res.get("cold_start_no_bytecode_s")
        lines.append(
            f"| {server.name} | {f'{rows:,.0f}' if rows else ''} | {f'{rows / limit:.0%}' if rows else ''} "
            f"| {res['cold_start_s']:.1f} | {f'{no_bytecode:.1f}' if no_bytecode else ''} "
            f"| {res['idle_rss_mib']:.0f} | {res['loaded_rss_mib']:.0f} |"
        )
        for key, label in (("oip_batch_rows_per_s", "JSON"), ("oip_binary_rows_per_s", "binary tensors"),
                           ("grpc_batch_rows_per_s", "gRPC raw contents")):  # fmt: skip
            if key in res:
                share = res[key] / limit
                lines.append(f"| {server.name}, OIP infer, {label} | {res[key]:,.0f} | {share:.0%} | | | | |")
    for server in measured:
        if sk := server.results.get("soak"):
            growth = sk["rss_last_mib"] / sk["rss_first_mib"] - 1
            lines += [
                "",
                f"Soak, {server.name}: {sk['minutes']:g} min at 8 connections, "
                f"{sk['requests']:,} requests, {sk['errors']} errors; RSS after the first "
                f"minute {sk['rss_first_mib']:.0f} MiB, at the end {sk['rss_last_mib']:.0f} "
                f"MiB ({growth:+.1%}), max {sk['rss_max_mib']:.0f} MiB; p99 first 10 s "
                f"{sk['p99_first_ms']:.2f} ms, last 10 s {sk['p99_last_ms']:.2f} ms.",
            ]
    lines += leader_table(measured, local)
    lines += targets_table(measured, local)
    lines += [
        "",
        f"In-process onnxruntime (1 thread): single row {local['calls_per_s']:,.0f} calls/s, "
        f"p50 {local['p50_ms']:.3f} ms, p99 {local['p99_ms']:.3f} ms; 1,000-row batch "
        f"{local['batch_rows_per_s']:,.0f} rows/s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="load per cell")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.md")
    parser.add_argument("--only", help="measure only the servers whose name contains this")
    parser.add_argument("--soak-minutes", type=float, default=10, help="steady load on ours after (0: none)")
    parser.add_argument("--all-peers", action="store_true", help="the optional peers too (Ray Serve)")
    parser.add_argument(
        "--no-memory", action="store_true", help="without the memory table (benchmarks.memory)"
    )
    args = parser.parse_args(argv)
    if not wrk.available():
        raise SystemExit("wrk is not installed: make bench-serving installs it (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        settings, version = train_reference(workdir / "state")
        measured, onnx_path, feeds, expected = servers(settings, version, workdir, args.all_peers)
        if args.only:
            measured = [s for s in measured if args.only in s.name or s.name.startswith("FastAPI") or s.peer]
        failed: list[tuple[Server, str]] = []
        for server in measured:
            print(f"» {server.name} ...", flush=True)
            soak_minutes = args.soak_minutes if server.name.startswith("ours") else 0
            try:
                measure_server(server, args.seconds, workdir, expected, soak_minutes)
            except (StartupError, RuntimeError) as exc:
                if not (server.peer or server.floor):
                    raise  # ours and the baselines are the table
                print(f"» {server.name} not measured: {exc}", flush=True)
                failed.append((server, str(exc).splitlines()[0]))
        local = in_process(onnx_path, feeds, min(args.seconds, 10))
        if not args.no_memory:  # the tree's memory per model and version, in a store of its own
            print("» memory of the serving tree ...", flush=True)
            memory_table = memory.run(min(args.seconds, 10), workdir / "memory")
    text = table([s for s in measured if all(s is not f for f, _ in failed)], local, args.seconds)
    if not args.no_memory:
        text += "\n" + memory_table
    if failed:
        text += "\nNot measured (each peer that failed, and why):\n\n" + "".join(
            f"- {server.name}: {reason}\n" for server, reason in failed
        )
    return publish(text, args.out)


if __name__ == "__main__":
    main()
