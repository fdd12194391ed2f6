"""A closed-loop load generator run as its own process: N connections, each sending back to back.

    python -m benchmarks.loadgen --url http://127.0.0.1:3000/predict --body body.json \
        --connections 8 --seconds 20 --out results.jsonl

Writes one JSON line per request (status, latency, model version, run id, request id) and prints a
summary. Used by the integration tests (swap and rollback under load) and the benchmarks.
"""

from __future__ import annotations

import argparse
import json
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


def _provenance(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    headers = response.headers
    return headers.get("x-model-version"), headers.get("x-run-id"), headers.get("x-request-id")


def one_request(client: httpx.Client, url: str, body: bytes) -> Outcome:
    started = time.time()
    tick = time.perf_counter()
    try:
        response = client.post(url, content=body, headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:
        return Outcome(started, 0, (time.perf_counter() - tick) * 1000, None, None, None, repr(exc))
    latency = (time.perf_counter() - tick) * 1000
    version, run_id, request_id = _provenance(response)
    error = None if response.status_code == 200 else response.text[:200]
    return Outcome(started, response.status_code, latency, version, run_id, request_id, error)


def run(
    url: str,
    body: bytes,
    connections: int,
    seconds: float,
    headers: dict[str, str],
    verify: bool | str,
    stop_file: Path | None = None,
) -> list[Outcome]:
    """Send until ``seconds`` have passed or ``stop_file`` exists, whichever comes first."""
    deadline = time.monotonic() + seconds
    results: list[list[Outcome]] = [[] for _ in range(connections)]

    def going() -> bool:
        return time.monotonic() < deadline and not (stop_file is not None and stop_file.exists())

    def worker(index: int) -> None:
        with httpx.Client(headers=headers, verify=verify, timeout=30) as client:
            while going():
                results[index].append(one_request(client, url, body))

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
        "versions": sorted({o.version for o in outcomes if o.version}),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


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
    args = parser.parse_args()
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    verify: bool | str = {"true": True, "false": False}.get(args.verify, args.verify)
    outcomes = run(
        args.url, args.body.read_bytes(), args.connections, args.seconds, headers, verify, args.stop_file
    )
    with args.out.open("w") as handle:
        for outcome in outcomes:
            handle.write(json.dumps(outcome.__dict__) + "\n")
    print(json.dumps(summary(outcomes)))


if __name__ == "__main__":
    main()
