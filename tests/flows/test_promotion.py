"""Approval mode and manual promotion, driven through the Prefect API the UI uses."""

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import keyset_from_paused_state

from flows.promote import PromotionRefusedError
from flows.release import promote_flow
from flows.tracking import alias_version, connect
from flows.training import PipelineResult, training_pipeline
from models.registry import CHALLENGER, CHAMPION, MODEL_CARD_ARTIFACT, Tag
from models.settings import Settings


async def _paused_runs() -> list[Any]:
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            )
        )


def wait_for_pause(timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = asyncio.run(_paused_runs())
        if runs:
            return runs[0]
        time.sleep(0.5)
    raise AssertionError("the pipeline never paused for approval")


def run_in_thread(target: Callable[[], PipelineResult]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target())
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def approval_run(decision: dict[str, Any] | None, timeout_s: int = 120) -> tuple[PipelineResult, str]:
    """Run the pipeline in approval mode; answer its form like the UI does (or never, if None)."""
    thread, outcome = run_in_thread(
        lambda: training_pipeline(promotion="approval", approval_timeout_s=timeout_s, deploy_target="none")
    )
    paused = wait_for_pause()
    description = str(read_flow_run_input(keyset_from_paused_state(paused.state)["description"], paused.id))
    if decision is not None:
        resume_flow_run(UUID(str(paused.id)), run_input=decision)
    thread.join(timeout=timeout_s + 60)
    assert not thread.is_alive()
    result = outcome[0]
    assert isinstance(result, PipelineResult), result
    return result, description


def test_approval_records_reviewer_and_reason_and_promotes(flow_settings: Settings) -> None:
    result, evidence = approval_run({"approve": True, "reviewer": "ana", "reason": "metrics and parity fine"})
    assert "Promote breast-cancer-classifier v1 to champion?" in evidence
    assert "no champion yet" in evidence
    assert "| onnx.parity |" in evidence and "| onnx.latency_p99 |" in evidence
    assert "expectations passed" in evidence
    assert (result.verdict, result.champion) == ("champion", "1")
    client = connect(flow_settings)
    tags = client.get_model_version(flow_settings.model_name, "1").tags
    assert (tags[Tag.PROMOTION_DECISION], tags[Tag.PROMOTION_BY]) == ("approved", "ana")
    assert tags[Tag.PROMOTION_REASON] == "metrics and parity fine"
    assert alias_version(client, flow_settings.model_name, CHAMPION) == "1"
    card = client.download_artifacts(tags[Tag.RUN_ID], MODEL_CARD_ARTIFACT)
    text = Path(card).read_text()
    assert "decision: approved by ana: metrics and parity fine" in text

    # a second candidate: the form shows deltas against the champion; the reviewer says no
    second, evidence = approval_run({"approve": False, "reviewer": "bo", "reason": "wait for Monday"})
    assert "champion v1" in evidence and "| delta |" in evidence
    assert (second.verdict, second.reasons) == ("declined", ["wait for Monday"])
    tags = client.get_model_version(flow_settings.model_name, "2").tags
    assert (tags[Tag.PROMOTION_DECISION], tags[Tag.PROMOTION_BY]) == ("rejected", "bo")
    assert alias_version(client, flow_settings.model_name, CHAMPION) == "1"
    assert alias_version(client, flow_settings.model_name, CHALLENGER) is None


def test_a_pause_that_times_out_rejects(flow_settings: Settings) -> None:
    result, _ = approval_run(None, timeout_s=4)
    assert result.verdict == "declined"
    tags = connect(flow_settings).get_model_version(flow_settings.model_name, "1").tags
    assert (tags[Tag.PROMOTION_DECISION], tags[Tag.PROMOTION_BY]) == ("rejected", "timeout")
    assert alias_version(connect(flow_settings), flow_settings.model_name, CHAMPION) is None


def test_manual_promotion_refuses_a_rejected_version_unless_forced(flow_settings: Settings) -> None:
    assert training_pipeline(deploy_target="none").verdict == "champion"
    rejected = training_pipeline(recipe="weak_logistic_regression", deploy_target="none")
    assert rejected.verdict == "rejected"
    with pytest.raises(PromotionRefusedError, match="gate verdict 'rejected'"):
        promote_flow(version="2", requested_by="cy", reason="try it", deploy_target="none")
    client = connect(flow_settings)
    assert alias_version(client, flow_settings.model_name, CHAMPION) == "1"
    previous = promote_flow(
        version="2", requested_by="cy", reason="forced for a test", force=True, deploy_target="none"
    )
    assert previous == "1"
    tags = client.get_model_version(flow_settings.model_name, "2").tags
    assert tags[Tag.PROMOTION_FORCED_BY] == "cy"
    assert alias_version(client, flow_settings.model_name, CHAMPION) == "2"
