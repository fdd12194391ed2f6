"""wrk (Debian's package) as the load generator: closed loop, N connections, a body from a file."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = """
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for name, value in string.gmatch(os.getenv("WRK_HEADERS") or "", "([^:\\n]+): ([^\\n]+)") do
  wrk.headers[name] = value
end
"""

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int
    seconds: float
    errors: int  # non-2xx answers plus socket errors (connect, read, write, timeout)
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str, connections: int) -> WrkResult:
    """Read wrk's ``--latency`` report."""
    total = re.search(r"(\d+) requests in ([\d.]+(?:us|ms|s|m))", output)
    if total is None:
        raise ValueError(f"not a wrk report:\n{output}")
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", output, flags=re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(non_2xx.group(1))
    return WrkResult(
        connections=connections,
        requests=int(total.group(1)),
        seconds=_ms(total.group(2)) / 1000,
        errors=errors,
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
    )


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    url: str,
    body: Path,
    connections: int,
    seconds: float,
    workdir: Path,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """``connections`` connections, each sending ``body`` again as soon as its answer is in."""
    script = workdir / "post.lua"
    script.write_text(SCRIPT)
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
        "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env={
            "WRK_BODY": str(body),
            "WRK_HEADERS": "\n".join(f"{k.title()}: {v}" for k, v in (headers or {}).items()),
            "PATH": "/usr/bin:/bin",
        },
    )
    return parse(done.stdout, connections)
