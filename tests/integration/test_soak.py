"""A short soak (benchmarks/soak.py runs 30 minutes): steady open-loop load, a deploy and a rollback.

Real ``bentoml serve`` with two workers, a separate load process at a fixed rate, the promote and rollback
flows moving ``champion``; every answer must be in the inference log exactly once, no request may fail,
and memory, descriptors and threads may not grow beyond loose bounds (two cores shared with other work).
"""

from pathlib import Path

import pytest

from benchmarks import soak
from flows.deploy import LocalService
from flows.processes import free_port
from tests.conftest import make_settings
from tests.integration.conftest import use

pytestmark = pytest.mark.integration

# Two swaps (at 16 s and 32 s), the steady state judged from 20 s on.
PLAN = soak.SoakPlan(
    seconds=45,
    rate=100,
    swap_every_s=16,
    sample_s=5,
    warmup_s=20,
    connections=8,
    bounds=soak.Bounds(max_rss_growth=0.25, max_p99_ratio=4.0, max_fd_growth=8, max_thread_growth=4),
)


def test_a_short_soak_keeps_memory_fds_threads_flat_and_logs_every_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None
) -> None:
    settings = use(make_settings(tmp_path / "state", serve_port=free_port(), serve_workers=2), monkeypatch)
    service = LocalService(settings)
    try:
        body, versions = soak.prepare(settings)
        result = soak.judge(soak.soak(service, body, versions, PLAN, tmp_path))
    finally:
        service.stop()
    print("\n" + soak.table(result))
    assert [what for _, what, _ in result.swaps] == [f"promote v{versions[1]}", f"rollback v{versions[0]}"]
    assert result.sent >= PLAN.rate * PLAN.seconds * 0.95, result.sent  # the rate was held
    assert len(result.samples) >= PLAN.seconds / PLAN.sample_s - 2
    failed = [(what, measured) for what, measured, _, ok in result.verdicts if not ok]
    assert failed == [], failed
    assert result.log["missing"] == 0 and result.log["answered"] == result.log["records"] == result.sent
