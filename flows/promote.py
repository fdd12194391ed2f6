"""Promotion: move ``champion`` to a version that passed the gate, and record who decided."""

from __future__ import annotations

from datetime import UTC, datetime

from mlflow import MlflowClient

from flows.tracking import alias_version
from models.registry import CHAMPION, Tag


class PromotionRefusedError(RuntimeError):
    """The version may not become champion (for example it did not pass the gate)."""


def promote(
    client: MlflowClient, model_name: str, version: str, *, decided_by: str, decision: str
) -> str | None:
    """Point ``champion`` at ``version``; return the version it pointed at before (None if first)."""
    tags = client.get_model_version(model_name, version).tags
    if tags.get(Tag.GATE_VERDICT) != "passed":
        raise PromotionRefusedError(
            f"version {version} of {model_name!r} has gate verdict "
            f"{tags.get(Tag.GATE_VERDICT, 'none')!r}; only a version that passed the gate is promoted"
        )
    previous = alias_version(client, model_name, CHAMPION)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    for key, value in {
        Tag.PROMOTION_DECISION: decision,
        Tag.PROMOTION_BY: decided_by,
        Tag.PROMOTION_AT: datetime.now(UTC).isoformat(timespec="seconds"),
    }.items():
        client.set_model_version_tag(model_name, version, key, value)
    return previous
