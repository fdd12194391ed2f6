"""Child processes we start and supervise: start each in a session of its own with its output in a log file,
wait until they answer, stop their whole group, quote their log. The stack, the benchmarks and the tests
start their servers through ``spawn`` or ``supervised`` and stop them through ``stop_group``.

Every start-up wait has a limit chosen on purpose and named by a setting; when it runs out, the error says
what did not start, how long it waited, which setting raises the limit, and the end of the process's log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx


class StartupError(RuntimeError):
    """A process we started did not become ready: it exited, or it missed its start-up limit."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def timed_out(what: str, waited_s: float, setting: str, log_file: Path) -> StartupError:
    return StartupError(
        f"{what} did not answer within {waited_s:.0f}s (the limit is {setting}; raise it on a slow or busy "
        f"machine); its log {log_file} ends with:\n{log_tail(log_file)}"
    )


def wait_http(
    url: str,
    timeout_s: float,
    exited: Callable[[], bool],
    what: str,
    setting: str,
    log_file: Path,
    verify: bool | str = True,
    interval_s: float = 0.2,
) -> float:
    """Poll ``url`` until it answers 200; return the seconds it took. Raise if the process exits first."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if exited():
            raise StartupError(
                f"{what} exited during start-up; its log {log_file} ends with:\n{log_tail(log_file)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return time.monotonic() - started
        time.sleep(interval_s)
    raise timed_out(what, time.monotonic() - started, setting, log_file)


def alive(pid: int) -> bool:
    """Whether the process runs (reaping it first if it is our own exited child)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False  # our own child, already exited: reaped now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(
    pid: int,
    timeout_s: float,
    poll: Callable[[], int | None] | None = None,
    first: signal.Signals = signal.SIGTERM,
) -> None:
    """``first`` (SIGTERM; SIGINT for what a terminal's Ctrl-C would stop) to the process group, SIGKILL to
    whatever of it outlives ``timeout_s``."""

    def running() -> bool:
        return poll() is None if poll is not None else alive(pid)

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, first)
    deadline = time.monotonic() + timeout_s
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # whatever is left of the group, leader gone or not


def spawn(
    command: list[str],
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    base_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own (so ``stop_group`` reaches its children), no stdin, its
    output appended to ``log_file``; ``env`` is added to ``base_env`` (this process's environment)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env={**(os.environ if base_env is None else base_env), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@contextlib.contextmanager
def supervised(
    command: list[str],
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stop_timeout_s: float = 20.0,
    first: signal.Signals = signal.SIGTERM,
    base_env: Mapping[str, str] | None = None,
    after_exit: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """``spawn`` for the length of a ``with`` block: on leaving it the whole group is stopped, also when its
    leader has exited already unless ``after_exit`` is False (where what it left running is under test)."""
    process = spawn(command, log_file, env, cwd, base_env)
    try:
        yield process
    finally:
        if after_exit or process.poll() is None:
            stop_group(process.pid, stop_timeout_s, process.poll, first)
