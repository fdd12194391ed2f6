"""The README's commands run as a newcomer runs them: in a fresh clone, under the machine's own environment.

No fixture, harness or pre-warmed state reaches these processes: the clone is of the committed tree, its
``make`` installs its own environment from the lockfile, and the environment is the one the suite was
started in, less what ``make test`` and ``uv run`` put in it on the way (this venv on ``PATH``,
``VIRTUAL_ENV``, make's and uv's own variables). A change that breaks a command for a newcomer fails here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.coldstart import newcomer_env
from flows.processes import supervised
from flows.tracking import PROJECT_ROOT
from tests.started_env import STARTED_ENV


def machine_env() -> dict[str, str]:
    return newcomer_env(STARTED_ENV)


def clone(target: Path) -> Path:
    """``git clone`` of the committed tree (what CI checks out), into ``target``."""
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(target)], check=True)
    return target


def listening_ports() -> set[int]:
    return {c.laddr.port for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def processes_in(folder: Path) -> list[str]:
    """Processes still running from the clone (its venv's Python, bentoml, prefect, mlflow)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(folder) in cmdline:
            found.append(f"{process.info['pid']}: {cmdline[:200]}")
    return found


@dataclass
class Command:
    """A ``make`` target running in the clone, its output in a file."""

    process: subprocess.Popen[bytes]
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, line: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while line not in self.text():
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.text()[-6000:]}"
            assert time.monotonic() < deadline, f"no {line!r} after {timeout_s:.0f}s:\n{self.text()[-6000:]}"
            time.sleep(0.5)

    def ctrl_c(self, timeout_s: float = 120) -> int:
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group (make, uv, mlops)."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=timeout_s)


@contextmanager
def make(
    folder: Path, target: str, output: Path, settings_env: Mapping[str, str] | None = None
) -> Iterator[Command]:
    """``make <target>`` in ``folder``, in a process group of its own; if the test ends first, stopped as
    Ctrl-C would (SIGINT), then SIGKILL after 90 s."""
    with supervised(
        ["make", target],
        output,
        settings_env,
        cwd=folder,
        stop_timeout_s=90,
        first=signal.SIGINT,
        base_env=machine_env(),
        after_exit=False,  # what a finished make leaves running is for the test to find
    ) as process:
        yield Command(process, output)


def run_make(folder: Path, target: str, output: Path, timeout_s: float) -> str:
    """``make <target>`` to its end; its output. Fails the test on a non-zero exit or the time limit."""
    with make(folder, target, output) as command:
        try:
            code = command.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"make {target} still running after {timeout_s:.0f}s:\n{command.text()[-6000:]}"
            ) from None
        assert code == 0, f"make {target} exited {code}:\n{command.text()[-6000:]}"
        return command.text()
