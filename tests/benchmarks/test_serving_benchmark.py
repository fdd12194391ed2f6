"""The serving, pipeline and rollout benchmarks' own code: parsing, accounting and a real wrk run."""

import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import pipeline, rollout, serving, wrk

WRK_REPORT = """Running 2s test @ http://127.0.0.1:8000/predict
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.51ms    1.20ms  25.31ms   90.00%
    Req/Sec     2.31k   120.00     2.50k    70.00%
  Latency Distribution
     50%    3.20ms
     75%    3.90ms
     90%    4.80ms
     99%  850.00us
  4620 requests in 2.00s, 1.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2310.00
"""


def test_wrk_report_is_read_with_units_and_errors() -> None:
    result = wrk.parse(WRK_REPORT, connections=8)
    assert result.requests == 4620 and result.seconds == 2.0 and result.rps == 2310.0
    assert result.p50_ms == 3.2 and result.p99_ms == 0.85
    assert result.errors == 2 + 1 + 4


def test_a_report_without_totals_is_refused() -> None:
    with pytest.raises(ValueError, match="not a wrk report"):
        wrk.parse("wrk: connection refused", connections=1)


class Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        body = json.loads(self.rfile.read(length))
        status = 200 if body.get("ok") else 400
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="make test installs Debian's wrk")
def test_wrk_posts_the_body_and_counts_refusals(echo_url: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"ok": True}))
    bad.write_text(json.dumps({"ok": False}))
    ok = wrk.run(echo_url, good, connections=2, seconds=1, workdir=tmp_path)
    assert ok.requests > 10 and ok.errors == 0 and 0 < ok.p50_ms <= ok.p99_ms
    refused = wrk.run(echo_url, bad, connections=2, seconds=1, workdir=tmp_path)
    assert refused.errors == refused.requests > 10


def test_memory_of_a_process_tree_counts_its_children() -> None:
    import os
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", "import time; x = bytearray(200 * 2**20); time.sleep(30)"]
    )
    try:
        import time

        time.sleep(1.5)
        alone = serving.tree_rss_mib(child.pid)
        assert alone > 150
        assert serving.tree_rss_mib(os.getpid()) >= alone  # we are its parent
    finally:
        child.kill()
        child.wait()


def test_oip_body_is_one_tensor_per_feature() -> None:
    body = json.loads(serving.oip_body([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}], ["a", "b"]))
    assert body["inputs"][0] == {"name": "a", "shape": [2, 1], "datatype": "FP64", "data": [1.0, 3.0]}


def test_swap_time_is_the_end_of_the_last_old_answer() -> None:
    outcomes: list[dict[str, Any]] = [
        {"started": 9.0, "latency_ms": 5, "status": 200, "version": "1"},
        {"started": 10.2, "latency_ms": 100, "status": 200, "version": "1"},
        {"started": 10.5, "latency_ms": 5, "status": 200, "version": "2"},
        {"started": 10.6, "latency_ms": 5, "status": 503, "version": None},
    ]
    assert rollout.swap_seconds(outcomes, moved_at=10.0, old="1") == pytest.approx(0.3)
    assert rollout.swap_seconds(outcomes, moved_at=10.3, old="1") == 0.0
    # a later move back to the old version is another event: answers after ``until`` do not count
    later = [*outcomes, {"started": 50.0, "latency_ms": 5, "status": 200, "version": "1"}]
    assert rollout.swap_seconds(later, moved_at=10.0, old="1", until=12.0) == pytest.approx(0.3)
    assert rollout.failed_between(outcomes, 10.0, 11.0) == (3, 1)


def test_generated_data_keeps_the_demo_shape(tmp_path: Path) -> None:
    import pandas as pd

    from models import datasets

    path = tmp_path / "g.parquet"
    pipeline.generate(1000, path)
    frame = pd.read_parquet(path)
    assert len(frame) == 1000
    assert list(frame.columns) == list(datasets.load_frame("demo:breast_cancer").columns)


def test_a_report_lands_in_its_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.report import publish

    out = tmp_path / "results" / "x.md"
    assert publish("| a |\n", out) == "| a |\n"
    assert out.read_text() == "| a |\n" and "| a |" in capsys.readouterr().out


def test_the_table_gives_ratios_from_the_same_run() -> None:
    def server(name: str, rps: float, rows_per_s: float, **extra: Any) -> serving.Server:
        cells = {f"c{c}": wrk.WrkResult(c, int(rps * 10), 10.0, 0, 1.0, 4.0) for c in serving.CONNECTIONS}
        results = {"batch_rows_per_s": rows_per_s, "cold_start_s": 1.0, "idle_rss_mib": 100, **extra}
        return serving.Server(
            name, [], {}, "", "", b"", b"", results={**cells, **results, "loaded_rss_mib": 110}
        )

    ours = server("ours", 2000, 100_000, oip_batch_rows_per_s=150_000, oip_binary_rows_per_s=250_000)
    local = {"calls_per_s": 1.0, "p50_ms": 0.1, "p99_ms": 0.2, "batch_rows_per_s": 400_000}
    text = serving.table([ours, server("FastAPI + joblib", 100, 50_000)], local, 10)
    assert "| ours | 8 | 2,000 | 1.00 | 4.00 | 0 | 20.00x | 1.00x |" in text
    assert "| ours, OIP infer, binary tensors | 250,000 | 62% | | | | |" in text
    assert "| ours | 100,000 | 25% | 1.0 |  | 100 | 110 |" in text  # no figure without bytecode here


def test_ours_is_set_against_the_best_peer_of_the_same_run_cell_by_cell() -> None:
    def server(name: str, rps: float, p99: float, rows_per_s: float, peer: bool) -> serving.Server:
        cells = {f"c{c}": wrk.WrkResult(c, int(rps * 10), 10.0, 0, 1.0, p99) for c in serving.CONNECTIONS}
        return serving.Server(
            name, [], {}, "", "", b"", b"", peer=peer, results={**cells, "batch_rows_per_s": rows_per_s}
        )

    ours = server("ours", 3000, 2.0, 90_000, peer=False)
    ours.results["oip_c8"] = wrk.WrkResult(8, 40_000, 10.0, 0, 1.0, 3.0)
    one, two = (
        server("peer, 1 worker", 1000, 4.0, 80_000, True),
        server("peer, 2 workers", 2000, 5.0, 60_000, True),
    )
    local = {"calls_per_s": 30_000.0, "p50_ms": 0.03, "p99_ms": 0.06, "batch_rows_per_s": 300_000.0}
    lines = serving.leader_table([ours, one, two], local)
    assert (
        "| single row, `/predict`, 8 conns, req/s | 3,000 | peer, 2 workers | 2,000 | 1.50x | 0.10x |"
        in lines
    )
    assert "| single row, OIP, 8 conns, req/s | 4,000 | peer, 2 workers | 2,000 | 2.00x | 0.13x |" in lines
    assert "| single row, OIP, 8 conns, p99 ms | 3.00 | peer, 1 worker | 4.00 | 0.75x | 50.00x |" in lines
    assert "| 1,000 rows, `/predict`, rows/s | 90,000 | peer, 1 worker | 80,000 | 1.12x | 0.30x |" in lines
    assert serving.leader_table([one, two], local) == []  # without ours, nothing to set against


def test_a_server_that_does_not_answer_as_onnxruntime_is_not_timed(echo_url: str) -> None:
    expected = serving.Expected(b'{"ok": true}', {"label": np.array([1, 0])})
    with pytest.raises(RuntimeError, match="echo: no OIP outputs"):
        serving.check_answers(echo_url, "echo", expected)
    refused = serving.Expected(b'{"ok": false}', {"label": np.array([1, 0])})
    with pytest.raises(Exception, match="400"):
        serving.check_answers(echo_url, "echo", refused)


def test_the_alias_watch_sees_when_the_alias_moved() -> None:
    versions = iter(["1"] * 3 + ["2"] * 1000)
    with rollout.AliasWatch(lambda: next(versions), every_s=0.01) as watch:
        time.sleep(0.3)
    assert [v for _, v in watch.seen] == ["1", "2"]
    moved = watch.moved_to("2", after=0)
    assert moved is not None and moved > watch.seen[0][0]
    assert watch.moved_to("3", after=0) is None


LOCAL = {"calls_per_s": 8000.0, "p50_ms": 0.1, "p99_ms": 0.2, "batch_rows_per_s": 170_000.0}


def peer_figures(rps: float, p99_ms: float, oip: bool = False) -> dict[str, object]:
    results: dict[str, object] = {
        "batch_rows_per_s": 60_000.0,
        "idle_rss_mib": 300.0,
        "loaded_rss_mib": 320.0,
        "cold_start_s": 1.5,
        "cold_start_no_bytecode_s": 4.0,
    }
    for c in (1, 8, 32):
        results[f"c{c}"] = wrk.WrkResult(c, int(rps * 10), 10.0, 0, p99_ms / 2, p99_ms)
        if oip:
            results[f"oip_c{c}"] = wrk.WrkResult(c, int(rps * 9), 10.0, 0, p99_ms / 2, p99_ms)
    if oip:
        results["oip_batch_rows_per_s"] = 50_000.0
        results["oip_binary_rows_per_s"] = 120_000.0
    return results


def measured_server(name: str, results: dict[str, object], peer: bool) -> serving.Server:
    return serving.Server(name, [], {}, "", "", b"", b"", peer=peer, results=results)


def test_each_target_is_a_ratio_of_the_same_run_and_says_whether_it_is_met() -> None:
    measured = [
        measured_server("ours (BentoML + ONNX)", peer_figures(3000, 5.0, oip=True), peer=False),
        measured_server("hand-written FastAPI + onnxruntime, 2 workers", peer_figures(2500, 6.0), peer=True),
        measured_server("KServe 0.21 ModelServer, 1 worker", peer_figures(1000, 9.0), peer=True),
        measured_server("KServe 0.21 ModelServer, 2 workers", peer_figures(2100, 9.0), peer=True),
    ]
    found = {t.label: t for t in serving.targets(measured, LOCAL)}
    hand = found["`/predict` 8 conns req/s >= 1.0x hand-written 2w"]
    assert (hand.ratio, hand.met) == (1.2, True)
    kserve = found["OIP 8 conns req/s >= 1.5x KServe"]  # the better KServe configuration: 2,100 req/s
    assert (round(kserve.ratio, 3), kserve.met) == (round(2700 / 2100, 3), False)
    assert found["OIP 1 conns no slower than `/predict`"].met is False  # 2,700 against 3,000
    assert found["`/predict` 32 conns p99 <= hand-written 2w"].met is True
    assert found["1,000 rows OIP JSON >= 1.0x hand-written 2w"].met is False  # 50,000 against 60,000
    assert found["1,000 rows binary >= 0.6x in-process"].met is True  # 120,000 of 170,000
    assert found["cold start with bytecode < 3 s"].met is True
    table = "\n".join(serving.targets_table(measured, LOCAL))
    assert f"{sum(t.met for t in found.values())} of {len(found)} targets met." in table


def test_the_leader_table_sets_each_cell_against_the_best_peer_and_in_process() -> None:
    measured = [
        measured_server("ours (BentoML + ONNX)", peer_figures(3000, 5.0, oip=True), peer=False),
        measured_server("hand-written FastAPI + onnxruntime, 2 workers", peer_figures(2500, 6.0), peer=True),
        measured_server("nginx, fixed 200 answer (the HTTP floor)", peer_figures(50_000, 0.5), peer=False),
    ]
    lines = serving.leader_table(measured, LOCAL)
    row = next(line for line in lines if line.startswith("| single row, OIP, 8 conns, req/s"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:] == ["2,700", "hand-written FastAPI + onnxruntime, 2 workers", "2,500", "1.08x", "0.34x"]
    assert "nginx" not in "\n".join(lines)  # the floor is no peer
    memory = next(line for line in lines if line.startswith("| idle RSS"))
    assert memory.endswith("| 1.00x |  |")  # no in-process figure for memory


def test_the_nginx_floor_listens_on_loopback_only(tmp_path: Path) -> None:
    conf = serving.NGINX_CONF.format(prefix=tmp_path, port=8123)
    assert "listen 127.0.0.1:8123;" in conf
    assert "access_log off;" in conf


def test_grpc_cells_set_ours_against_the_peers_that_speak_grpc() -> None:
    def server(name: str, grpc_rps: float | None, peer: bool) -> serving.Server:
        cells: dict[str, Any] = {
            f"c{c}": wrk.WrkResult(c, 10_000, 10.0, 0, 1.0, 4.0) for c in serving.CONNECTIONS
        }
        if grpc_rps is not None:
            for c in serving.CONNECTIONS:
                cells[f"grpc_c{c}"] = wrk.WrkResult(c, int(grpc_rps * 10), 10.0, 0, 1.0, 2.0)
            cells["grpc_batch_rows_per_s"] = grpc_rps * 100
        return serving.Server(name, [], {}, "", "", b"", b"", peer=peer, results=cells)

    ours, triton, plain = (
        server("ours", 3000, False),
        server("Triton", 2000, True),
        server("REST", None, True),
    )
    local = {"calls_per_s": 30_000.0, "p50_ms": 0.03, "p99_ms": 0.06, "batch_rows_per_s": 600_000.0}
    lines = serving.grpc_table([ours, triton, plain])
    assert "| Triton | 8 | 2,000 | 1.00 | 2.00 | 0 | 1.50x |" in lines
    assert not any(line.startswith("| REST") for line in lines)  # no gRPC, no row
    leader = serving.leader_table([ours, triton, plain], local)
    assert (
        "| single row, gRPC raw contents, 32 conns, calls/s | 3,000 | Triton | 2,000 | 1.50x | 0.10x |"
        in leader
    )
    assert "| 1,000 rows, gRPC raw contents, rows/s | 300,000 | Triton | 200,000 | 1.50x | 0.50x |" in leader
