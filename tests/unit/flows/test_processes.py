"""The one process-supervision helper: a child's whole group stopped, its output logged, its wait bounded."""

import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.processes import StartupError, alive, free_port, supervised, wait_http

# A leader that starts a grandchild in its own group and then waits; the grandchild prints its pid.
FAMILY = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def grandchild(log: Path) -> int:
    deadline = time.monotonic() + 30
    while not log.read_text().strip():
        assert time.monotonic() < deadline, "the leader never started its child"
        time.sleep(0.05)
    return int(log.read_text().split()[0])


def gone(pid: int, timeout_s: float = 10) -> bool:
    """Exited (a zombie waiting for init to reap it counts) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_leaving_the_block_stops_the_whole_group_and_the_output_is_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "family.log"
    with supervised([sys.executable, "-c", FAMILY], log, {"EXTRA": "1"}, stop_timeout_s=5) as process:
        child = grandchild(log)
        assert alive(child)
        assert psutil.Process(process.pid).environ()["EXTRA"] == "1"
    assert process.poll() == -signal.SIGTERM
    assert gone(child)


def test_a_leader_that_ignores_the_first_signal_is_killed_after_the_timeout(tmp_path: Path) -> None:
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)\n"
    began = time.monotonic()
    with supervised(
        [sys.executable, "-c", stubborn], tmp_path / "s.log", stop_timeout_s=1, first=signal.SIGINT
    ):
        time.sleep(0.5)  # its signal handler is in place
    assert 1 <= time.monotonic() - began < 10


@pytest.mark.parametrize("after_exit", [True, False])
def test_what_a_finished_leader_left_is_stopped_unless_it_is_under_test(
    tmp_path: Path, after_exit: bool
) -> None:
    leaves = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
    )
    log = tmp_path / "leaves.log"
    with supervised([sys.executable, "-c", leaves], log, after_exit=after_exit) as process:
        process.wait(timeout=30)
        child = grandchild(log)
    try:
        assert gone(child, timeout_s=5 if after_exit else 0.5) is after_exit
    finally:
        psutil.Process(child).kill() if not after_exit else None


def test_a_wait_that_runs_out_names_what_and_the_setting(tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    quiet = [sys.executable, "-c", "import time; print('booting'); time.sleep(60)"]
    with (
        supervised(quiet, log) as process,
        pytest.raises(StartupError, match=r"quiet server.*QUIET_LIMIT_S=0.5") as raised,
    ):
        wait_http(
            f"http://127.0.0.1:{free_port()}/health",
            0.5,
            exited=lambda: process.poll() is not None,
            what="quiet server",
            setting="QUIET_LIMIT_S=0.5",
            log_file=log,
        )
    assert "booting" in str(raised.value)


def test_a_process_that_exits_during_start_up_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "dies.log"
    with (
        supervised([sys.executable, "-c", "raise SystemExit('no config')"], log) as process,
        pytest.raises(StartupError, match="exited during start-up") as raised,
    ):
        wait_http(
            f"http://127.0.0.1:{free_port()}/health",
            30,
            exited=lambda: process.poll() is not None,
            what="dying server",
            setting="X=30",
            log_file=log,
        )
    assert "no config" in str(raised.value)
