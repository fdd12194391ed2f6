"""The Prefect calls of the stack, the fault benchmark and the tests, on a real (temporary) Prefect server."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL

from flows import prefect_api


def test_pools_deployments_runs_and_schedules(prefect_server: None) -> None:
    api = str(PREFECT_API_URL.value())
    with prefect_api.client(api) as prefect:
        assert not prefect_api.work_pool_exists(prefect, "api-test-pool")
        prefect.create_work_pool(WorkPoolCreate(name="api-test-pool", type="process"))
        assert prefect_api.work_pool_exists(prefect, "api-test-pool")

        flow_id = prefect.create_flow_from_name("api-test-flow")
        deployment = prefect.create_deployment(
            flow_id,
            "api-test",
            work_pool_name="api-test-pool",
            entrypoint="nowhere.py:nothing",
        )
        assert prefect_api.deployments_named(prefect, ["api-test", "absent"]) == {"api-test": deployment}
        assert prefect_api.deployment_id(prefect, "api-test") == deployment
        with pytest.raises(LookupError, match="no deployment named 'absent'"):
            prefect_api.deployment_id(prefect, "absent")

        run_id = prefect_api.create_run(prefect, "api-test", {"x": 1})
        assert prefect.read_flow_run(UUID(run_id)).parameters == {"x": 1}
        assert prefect_api.run_state(prefect, run_id) == "SCHEDULED"  # no worker polls this pool
        waited = prefect_api.wait_run(prefect, run_id, until={"SCHEDULED"}, timeout_s=10)
        assert waited is not None and str(waited.id) == run_id
        assert prefect_api.wait_run(prefect, run_id, timeout_s=2) is None  # never final here

        # a run no worker has picked up is scheduled, at about now
        (start,) = prefect_api.scheduled_starts(prefect, deployment)
        assert abs((start - datetime.now(UTC)).total_seconds()) < 120
        assert not prefect_api.worker_seen_since(prefect, "api-test-pool", "nobody", datetime.now(UTC))
