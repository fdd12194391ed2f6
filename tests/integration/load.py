"""Run benchmarks/loadgen.py as a separate process from a test, and read its results."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from flows.tracking import PROJECT_ROOT


def start_load(
    url: str, body: dict[str, Any], out: Path, seconds: float, connections: int = 6, **flags: str
) -> subprocess.Popen[str]:
    body_file = out.with_suffix(".body.json")
    body_file.write_text(json.dumps(body))
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    command = [sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--body", str(body_file)]
    command += ["--connections", str(connections), "--seconds", str(seconds), "--out", str(out), *extra]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)


def finish_load(process: subprocess.Popen[str], out: Path) -> list[dict[str, Any]]:
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0, stdout
    return [json.loads(line) for line in out.read_text().splitlines()]
