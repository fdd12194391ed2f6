"""Faults under steady load, shortened (benchmarks/faults.py runs the full ones): real servers throughout.

One system (``mlflow server`` as registry, ``bentoml serve`` with two workers, a separate load process)
takes, in turn: a killed serving worker, a corrupted and a missing model artifact behind ``champion``, an
unwritable inference log, and the registry down for a while with a pipeline started meanwhile; then the
service restarted to fail closed takes the unwritable log again. A second
test kills a Prefect worker mid-run on a real Prefect server and reruns.
"""

from pathlib import Path

import pytest

from benchmarks import faults
from tests.integration.conftest import use

pytestmark = pytest.mark.integration

# A steady 100 req/s (open loop) rather than back to back: requests are in flight through every fault,
# and the pipelines and checks the faults start are not starved of the two cores.
PLAN = faults.Plan(
    registry_down_s=12,
    retry_delay_s=3,
    log_fault_s=3,
    connections=4,
    swap_poll_s=0.5,
    prefect_worker=False,
    rate=100,
)


def test_serving_faults_under_load_fail_no_request_and_lose_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None
) -> None:
    settings = use(faults.rig_settings(tmp_path, PLAN.swap_poll_s), monkeypatch)
    with faults.running_rig(settings, prefect=False) as rig:
        body = faults.first_model(rig)
        results = faults.run_faults(rig, PLAN, body, tmp_path)
    print("\n" + faults.table(results, PLAN))
    by_fault = {r.fault.split(" (")[0]: r for r in results}
    assert faults.check(results) == []
    assert all(r.sent > 0 for r in results), results
    assert by_fault["inference log unwritable"].not_logged > 0  # the fault happened, and was counted
    closed = by_fault[faults.FAIL_CLOSED]  # the same fault, the other policy: refused, never unlogged
    assert closed.failed > 0 and closed.not_logged == 0 and closed.lost == 0, closed
    assert f"{closed.failed} refused with [503], {closed.failed} saying why" in closed.notes, closed
    whole = next(r for r in results if r.fault.startswith("whole run"))
    assert whole.failed == 0 and whole.lost == 0, whole
    worker = by_fault["serving worker killed"]
    assert worker.outage_s is not None and worker.outage_s < 60, worker


def test_a_prefect_worker_killed_mid_run_crashes_the_run_and_the_rerun_registers_no_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use(faults.rig_settings(tmp_path, PLAN.swap_poll_s), monkeypatch)
    with faults.running_rig(settings, prefect=True) as rig:
        result = faults.kill_prefect_worker(rig)
    print("\n" + faults.table([result], PLAN))
    assert result.outage_s is not None and result.outage_s <= faults.ZOMBIE_AFTER_S + 60, result
