"""Run benchmarks/loadgen.py as a separate process from a test, and read its results."""

import json
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.loadgen import command
from flows.tracking import PROJECT_ROOT


def start_load(
    url: str, body: dict[str, Any], out: Path, seconds: float, connections: int = 6, **flags: str
) -> subprocess.Popen[str]:
    body_file = out.with_suffix(".body.json")
    body_file.write_text(json.dumps(body))
    argv = command(url, body_file, out, seconds, connections, **flags)
    return subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)


def finish_load(process: subprocess.Popen[str], out: Path) -> list[dict[str, Any]]:
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 0, stdout
    return [json.loads(line) for line in out.read_text().splitlines()]
