"""Promotion: move ``champion`` to a version, automatically or by a person's recorded decision.

Moving the alias is a compare-and-set: the gate compared the candidate against one champion, so the alias
only moves if it still points there (re-read under a lock right before the move). Two pipeline runs at once
for the same model therefore never leave ``champion`` on a version whose gate saw a different champion:
the later one is told it was superseded and re-gates against the new champion.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from mlflow import MlflowClient

from flows.tracking import alias_version
from models.registry import CHAMPION, Tag


class PromotionRefusedError(RuntimeError):
    """The version may not become champion (for example it did not pass the gate)."""


class PromotionSupersededError(RuntimeError):
    """``champion`` moved since the gate compared the candidate against it: gate again, then promote."""


ANY: Final = "<any champion>"  # promote without comparing the alias first (by hand: a person decided)


@contextlib.contextmanager
def alias_lock(client: MlflowClient, model_name: str) -> Iterator[None]:
    """Serialise read-compare-move of a model's aliases between processes on this machine.

    MLflow has no conditional alias update; across machines the re-read right before the move narrows
    the window to one round trip but cannot close it.
    """
    key = hashlib.sha256(f"{client._registry_uri}|{model_name}".encode()).hexdigest()[:20]
    with (Path(tempfile.gettempdir()) / f"mlops-alias-{key}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def move_alias(
    client: MlflowClient, model_name: str, alias: str, version: str, expected: str | None
) -> str | None:
    """Point ``alias`` at ``version`` only if it still points at ``expected`` (None: unset); return it.

    Raises PromotionSupersededError when the alias moved meanwhile.
    """
    with alias_lock(client, model_name):
        current = alias_version(client, model_name, alias)
        if expected != ANY and current != expected:
            raise PromotionSupersededError(
                f"{model_name}@{alias} is v{current}, not v{expected} as when v{version} was checked "
                "against it (another run moved it): not moved"
            )
        if current != version:
            client.set_registered_model_alias(model_name, alias, version)
        return current


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


def record_decision(client: MlflowClient, model_name: str, version: str, decision: Decision) -> None:
    for key, value in {
        Tag.PROMOTION_DECISION: decision.label,
        Tag.PROMOTION_BY: decision.by,
        Tag.PROMOTION_REASON: decision.reason,
        Tag.PROMOTION_AT: now(),
    }.items():
        client.set_model_version_tag(model_name, version, key, value)


def promote(
    client: MlflowClient,
    model_name: str,
    version: str,
    decision: Decision,
    *,
    force: bool = False,
    expected_champion: str | None = ANY,
) -> str | None:
    """Point ``champion`` at ``version``; return the version it pointed at before (None if first).

    A version that did not pass the gate is refused unless ``force``; forcing is recorded with its author.
    With ``expected_champion`` (the version the gate compared against, None for "no champion"), the alias
    moves only if it still points there; otherwise PromotionSupersededError and nothing is recorded.
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
    previous = move_alias(client, model_name, CHAMPION, version, expected_champion)
    record_decision(client, model_name, version, decision)
    client.set_model_version_tag(model_name, version, Tag.PROMOTION_PREVIOUS, previous or "none")
    return previous
