"""The stack's process bookkeeping: what a killed stack left behind is found and stopped."""

import json
import subprocess
import sys
from pathlib import Path

from flows.stack import components, deployment_names, pids_file, stop_leftovers
from models.settings import Settings


def test_a_killed_stacks_processes_are_stopped_by_the_next_start_or_mlops_stop(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    pids_file(settings).write_text(json.dumps({"worker": sleeper.pid}))
    assert stop_leftovers(settings) == [sleeper.pid]
    assert sleeper.wait(timeout=15) is not None
    assert not pids_file(settings).exists()
    assert stop_leftovers(settings) == []  # nothing recorded: nothing to do


def test_the_stack_applies_every_deployment_of_prefect_yaml() -> None:
    assert set(deployment_names()) >= {"training-pipeline", "promote", "rollback", "deploy", "monitor"}


def test_the_worker_asks_for_runs_as_often_as_the_setting_says(tmp_path: Path) -> None:
    worker = components(Settings(state_dir=tmp_path, worker_poll_s=0.5))["worker"]
    assert worker.env["PREFECT_WORKER_QUERY_SECONDS"] == "0.5"  # Prefect's own default is 10 s
