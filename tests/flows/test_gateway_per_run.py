"""One registry gateway per flow run: its tasks, in any thread, share it; the next run builds its own."""

from prefect import flow, task

from flows.gateway import gateway
from models.settings import Settings


@task
def gateway_id() -> int:
    return id(gateway(Settings()))


@flow
def two_tasks() -> list[int]:
    return [gateway_id(), gateway_id.submit().result(), id(gateway(Settings()))]


def test_tasks_of_one_run_share_the_gateway_and_the_next_run_builds_its_own(flow_settings: Settings) -> None:
    first, second = two_tasks(), two_tasks()
    assert len(set(first)) == 1, first
    assert len(set(second)) == 1, second
    assert first[0] != second[0]
