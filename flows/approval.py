"""Approval: the form a reviewer answers in the Prefect UI, the evidence it shows, and the pause.

A pipeline run with ``promotion="approval"`` whose version passed the gate pauses with ``ApprovalInput``
(the reviewer's decision, name and reason) and the evidence of ``evidence_markdown``; no answer within the
timeout declines. A declined version is tagged with the decision and loses ``challenger``.
"""

from __future__ import annotations

import contextlib
import threading
from uuid import UUID

import prefect.runtime.flow_run
from prefect import task
from prefect.cache_policies import NONE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows import promote
from flows.gate import ChampionScores, GateResult
from flows.gateway import Registry, gateway
from flows.runs import log_stage
from models.registry import CHALLENGER
from models.settings import Settings


class ApprovalInput(RunInput):
    """The form a reviewer fills in the Prefect UI to resume a paused pipeline run."""

    approve: bool = Field(description="Promote this version to champion?")
    reviewer: str = Field(min_length=1, description="Your name: recorded on the model version.")
    reason: str = Field(min_length=1, description="Why: recorded on the model version.")


def evidence_markdown(
    model_name: str,
    version: str,
    metrics: dict[str, float],
    champion: ChampionScores | None,
    validation: str,
    gate: GateResult,
) -> str:
    """What a reviewer sees in the pause form: deltas against the champion and every gate check."""
    lines = [f"## Promote {model_name} v{version} to champion?", "", f"**Data validation:** {validation}", ""]
    if champion is None or champion.error:
        note = champion.error if champion else "no champion yet: this would be the first"
        lines += [f"**Champion:** {note}", "", "| metric | candidate |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items())]
    else:
        lines += [
            f"**Champion:** v{champion.version}, scored on the same held-out rows in this run",
            "",
            f"| metric | candidate | champion v{champion.version} | delta |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {value:.4f} | {champion.metrics[name]:.4f} | {value - champion.metrics[name]:+.4f} |"
            for name, value in sorted(metrics.items())
            if name in champion.metrics
        ]
    lines += ["", f"**Gate:** {gate.verdict}", "", gate.to_markdown()]
    return "\n".join(lines)


# The server refuses any way out of a Paused state whose own deadline has passed (the run can then
# only fail), so the flow declines by itself at its deadline while the pause is still open.
PAUSE_GRACE_S = 60


def _decline_at_deadline(flow_run_id: UUID, timeout_s: int) -> None:
    reason = f"no decision within {timeout_s} s"
    with contextlib.suppress(Exception):  # a reviewer answered first: the run is no longer paused
        resume_flow_run(flow_run_id, run_input={"approve": False, "reviewer": "timeout", "reason": reason})


def request_approval(evidence: str, timeout_s: int) -> promote.Decision:
    """Pause the flow run with a form in the Prefect UI; no answer within the timeout rejects."""
    flow_run_id = UUID(str(prefect.runtime.flow_run.id))
    deadline = threading.Timer(timeout_s, _decline_at_deadline, args=(flow_run_id, timeout_s))
    deadline.daemon = True
    deadline.start()
    try:
        answer = pause_flow_run(
            wait_for_input=ApprovalInput.with_initial_data(description=evidence),
            timeout=timeout_s + PAUSE_GRACE_S,
            poll_interval=2,
        )
    except FlowPauseTimeout:
        return promote.Decision(False, "timeout", f"no decision within {timeout_s} s")
    finally:
        deadline.cancel()
    return promote.Decision(answer.approve, answer.reviewer, answer.reason)


def record_declined_decision(registry: Registry, version: str, decision: promote.Decision) -> None:
    """A declined version's registry writes: the decision as tags, and it is no longer ``challenger``."""
    promote.record_decision(registry.client, registry.model_name, version, decision)
    if registry.alias(CHALLENGER) == version:
        registry.drop(CHALLENGER)


@task(cache_policy=NONE)
def record_declined(settings: Settings, version: str, decision: promote.Decision) -> None:
    record_declined_decision(gateway(settings), version, decision)
    log_stage("promote", "version=%s verdict=declined by=%s reason=%s", version, decision.by, decision.reason)
