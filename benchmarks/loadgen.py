"""A load generator run as its own process: N connections, closed loop (back to back) or at a fixed rate.

    python -m benchmarks.loadgen --url http://127.0.0.1:3000/predict --body body.json \
        --connections 8 --seconds 20 --out results.jsonl
    python -m benchmarks.loadgen ... --rate 200 --connections 16   # open loop: 200 req/s whatever happens

Bounded by ``--seconds``, ``--max-requests`` and ``--stop-file``. ``--retries N`` resends a request whose
connection failed (refused, reset, closed before the answer) up to N times after a short back-off
(``RETRY_BACKOFF_S`` times the attempt), as a client with a retry policy on connection errors would. The
back-off matters for a SIGKILLed worker: the kernel closes the dead process's sockets one by one, so a retry
sent at once can be queued on its listening socket before that closes and be reset a second time.

Writes one JSON line per request (status, latency, model version, run id, request id, attempts, whether
the service logged it) and prints a summary. Used by the integration tests
(swaps, rollbacks and faults under load) and the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class Outcome:
    started: float
    status: int
    latency_ms: float
    version: str | None
    run_id: str | None
    request_id: str | None
    error: str | None
    attempts: int = 1  # more than one: the connection failed and the request was sent again
    logged: bool | None = None  # the service's "logged" answer (False: its inference log failed)
    lag_ms: float = 0.0  # open loop: how late after its scheduled time the request was sent


def _provenance(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    headers = response.headers
    return headers.get("x-model-version"), headers.get("x-run-id"), headers.get("x-request-id")


def _logged(response: httpx.Response) -> bool | None:
    if response.status_code != 200:
        return None
    return b'"logged":false' not in response.content


RETRY_BACKOFF_S = 0.1


def one_request(client: httpx.Client, url: str, body: bytes, retries: int = 0) -> Outcome:
    """One request; a connection-level failure is sent again up to ``retries`` times, backing off."""
    started = time.time()
    tick = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        try:
            response = client.post(url, content=body, headers={"content-type": "application/json"})
            break
        except httpx.TransportError as exc:
            if attempts > retries:
                latency = (time.perf_counter() - tick) * 1000
                return Outcome(started, 0, latency, None, None, None, repr(exc), attempts)
            time.sleep(RETRY_BACKOFF_S * attempts)
    latency = (time.perf_counter() - tick) * 1000
    version, run_id, request_id = _provenance(response)
    error = None if response.status_code == 200 else response.text[:200]
    return Outcome(
        started,
        response.status_code,
        latency,
        version,
        run_id,
        request_id,
        error,
        attempts,
        _logged(response),
    )


@dataclass(frozen=True)
class Pace:
    """When each connection sends: back to back (``rate`` None) or its share of ``rate`` req/s."""

    connections: int
    rate: float | None = None
    max_requests: int | None = None

    def slot(self, index: int, sent: int) -> int:
        """The global number of this connection's ``sent``-th request."""
        return sent * self.connections + index

    def due(self, began: float, slot: int) -> float:
        return began if self.rate is None else began + slot / self.rate


def run(
    url: str,
    body: bytes,
    connections: int,
    seconds: float,
    headers: dict[str, str],
    verify: bool | str,
    stop_file: Path | None = None,
    pace: Pace | None = None,
    retries: int = 0,
) -> list[Outcome]:
    """Send until ``seconds`` have passed, ``stop_file`` exists or the request budget is spent."""
    pace = pace or Pace(connections)
    began = time.monotonic()
    deadline = began + seconds
    results: list[list[Outcome]] = [[] for _ in range(connections)]

    def going(slot: int) -> bool:
        within = pace.max_requests is None or slot < pace.max_requests
        return within and time.monotonic() < deadline and not (stop_file is not None and stop_file.exists())

    def worker(index: int) -> None:
        with httpx.Client(headers=headers, verify=verify, timeout=30) as client:
            while going(slot := pace.slot(index, len(results[index]))):
                due = pace.due(began, slot)
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                lag_ms = max(0.0, (time.monotonic() - due) * 1000) if pace.rate else 0.0
                outcome = one_request(client, url, body, retries)
                results[index].append(Outcome(**{**outcome.__dict__, "lag_ms": round(lag_ms, 3)}))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted((o for r in results for o in r), key=lambda o: o.started)


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    latencies = sorted(o.latency_ms for o in outcomes if o.status == 200)

    def pct(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    return {
        "requests": len(outcomes),
        "ok": sum(o.status == 200 for o in outcomes),
        "failed": sum(o.status != 200 for o in outcomes),
        "retried": sum(o.attempts > 1 for o in outcomes),
        "not_logged": sum(o.logged is False for o in outcomes),
        "versions": sorted({o.version for o in outcomes if o.version}),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def command(
    url: str, body_file: Path, out: Path, seconds: float, connections: int, **flags: Any
) -> list[str]:
    """This module as a command line; ``flags`` are its options (``stop_file=...`` is ``--stop-file``)."""
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items() if v is not None]
    return [
        sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--body", str(body_file),
        "--connections", str(connections), "--seconds", str(seconds), "--out", str(out), *extra,
    ]  # fmt: skip


@dataclass(frozen=True)
class LoadProcess:
    """A load generator running as its own process; ``finish`` stops it and reads every outcome."""

    process: subprocess.Popen[str]
    out: Path
    stop_file: Path

    def finish(self, timeout_s: float = 120) -> list[dict[str, Any]]:
        self.stop_file.touch()
        stdout, _ = self.process.communicate(timeout=timeout_s)
        if self.process.returncode != 0:
            raise RuntimeError(f"load generator exited {self.process.returncode}: {stdout}")
        return [json.loads(line) for line in self.out.read_text().splitlines()]


def spawn_load(
    url: str, body: dict[str, Any], out: Path, seconds: float, connections: int, **flags: Any
) -> LoadProcess:
    """Start sending ``body`` to ``url`` from a separate process (stopped by ``finish`` or ``seconds``)."""
    from flows.tracking import PROJECT_ROOT

    body_file, stop_file = out.with_suffix(".body.json"), out.with_suffix(".stop")
    body_file.write_text(json.dumps(body))
    stop_file.unlink(missing_ok=True)
    argv = command(url, body_file, out, seconds, connections, stop_file=stop_file, **flags)
    return LoadProcess(
        subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True), out, stop_file
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, type=Path, help="file with the JSON body to send")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--verify", default="true", help="'true', 'false' or a CA bundle path")
    parser.add_argument("--stop-file", type=Path, help="stop early once this file exists")
    parser.add_argument("--rate", type=float, help="open loop: requests per second over all connections")
    parser.add_argument("--max-requests", type=int, help="send at most this many requests")
    parser.add_argument("--retries", type=int, default=0, help="resend on a connection error, up to N times")
    args = parser.parse_args()
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    verify: bool | str = {"true": True, "false": False}.get(args.verify, args.verify)
    pace = Pace(args.connections, args.rate, args.max_requests)
    outcomes = run(
        args.url,
        args.body.read_bytes(),
        args.connections,
        args.seconds,
        headers,
        verify,
        args.stop_file,
        pace,
        args.retries,
    )
    with args.out.open("w") as handle:
        for outcome in outcomes:
            handle.write(json.dumps(outcome.__dict__) + "\n")
    print(json.dumps(summary(outcomes)))


if __name__ == "__main__":
    main()
