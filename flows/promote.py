"""Promotion: move ``champion`` to a version, automatically or by a person's recorded decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from prefect.input import RunInput
from pydantic import Field

from flows.gate import ChampionScores, GateResult
from flows.tracking import alias_version
from models.registry import CHAMPION, Tag


class PromotionRefusedError(RuntimeError):
    """The version may not become champion (for example it did not pass the gate)."""


class ApprovalInput(RunInput):
    """The form a reviewer fills in the Prefect UI to resume a paused pipeline run."""

    approve: bool = Field(description="Promote this version to champion?")
    reviewer: str = Field(min_length=1, description="Your name: recorded on the model version.")
    reason: str = Field(min_length=1, description="Why: recorded on the model version.")


@dataclass(frozen=True)
class Decision:
    approved: bool
    by: str
    reason: str

    @property
    def label(self) -> str:
        return "approved" if self.approved else "rejected"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def record_decision(client: MlflowClient, model_name: str, version: str, decision: Decision) -> None:
    for key, value in {
        Tag.PROMOTION_DECISION: decision.label,
        Tag.PROMOTION_BY: decision.by,
        Tag.PROMOTION_REASON: decision.reason,
        Tag.PROMOTION_AT: now(),
    }.items():
        client.set_model_version_tag(model_name, version, key, value)


def promote(
    client: MlflowClient, model_name: str, version: str, decision: Decision, *, force: bool = False
) -> str | None:
    """Point ``champion`` at ``version``; return the version it pointed at before (None if first).

    A version that did not pass the gate is refused unless ``force``; forcing is recorded with its author.
    """
    tags = client.get_model_version(model_name, version).tags
    verdict = tags.get(Tag.GATE_VERDICT, "none")
    if verdict != "passed":
        if not force:
            raise PromotionRefusedError(
                f"version {version} of {model_name!r} has gate verdict {verdict!r}; "
                "only a version that passed the gate is promoted (set force to override)"
            )
        client.set_model_version_tag(model_name, version, Tag.PROMOTION_FORCED_BY, decision.by)
    previous = alias_version(client, model_name, CHAMPION)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    record_decision(client, model_name, version, decision)
    return previous
