"""The traffic split a person sets: which version is the ``canary`` and the ``shadow`` (aliases), and the
share of requests each gets (tags on the registered model, ``models/traffic.py``). Every serving worker
and replica reads both at its alias poll, so a change takes effect everywhere within one poll.

Only a version that passed its gate can take a role (as only such a version is served by path); a share
above 0 needs the role's version; the change is recorded on the registered model (who, when, why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException

from flows.gateway import Registry
from models.registry import CANARY, SHADOW, ModelTag, Tag
from models.traffic import Shares

ROLE_SHARES = {CANARY: ModelTag.CANARY_PERCENT, SHADOW: ModelTag.SHADOW_PERCENT}


class SplitRefusedError(ValueError):
    """The split asked for is not set; the message names why."""


@dataclass(frozen=True)
class Split:
    canary: str | None  # the version the alias names, None without one
    shares: Shares
    shadow: str | None
    changed: str  # who set it, when and why ("" before the first change)

    def lines(self) -> list[str]:
        canary = f"v{self.canary} answers {self.shares.canary:g}% of requests" if self.canary else "none"
        shadow = f"v{self.shadow} gets a copy of {self.shares.shadow:g}%" if self.shadow else "none"
        return [
            f"canary      {canary}",
            f"shadow      {shadow}",
            *([f"split       set {self.changed}"] if self.changed else []),
        ]


def current(registry: Registry) -> Split:
    tags = dict(registry.client.get_registered_model(registry.model_name).tags)
    return Split(
        canary=registry.alias(CANARY),
        shares=Shares.from_tags(tags),
        shadow=registry.alias(SHADOW),
        changed=tags.get(ModelTag.TRAFFIC_CHANGED, ""),
    )


def check_percent(value: float, role: str) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise SplitRefusedError(f"{role}: a share is a percentage in [0, 100], not {value:g}")


def _servable(registry: Registry, version: str, role: str) -> None:
    try:
        verdict = registry.tags(version).get(Tag.GATE_VERDICT, "none")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise SplitRefusedError(
            f"{role}: version {version} of {registry.model_name} is not registered"
        ) from None
    if verdict != "passed":
        raise SplitRefusedError(
            f"{role}: version {version} has gate verdict {verdict!r}; only a version that passed its gate "
            "takes a share of traffic"
        )


def set_split(
    registry: Registry,
    *,
    by: str,
    reason: str,
    versions: dict[str, str] | None = None,
    shares: dict[str, float] | None = None,
    clear: bool = False,
) -> Split:
    """Point the roles' aliases at ``versions`` and set their ``shares`` (percent), or ``clear`` both roles
    (shares to 0 first, then the aliases go). Everything is checked before anything is written."""
    versions, shares = dict(versions or {}), dict(shares or {})
    for role, share in shares.items():
        check_percent(share, role)
    for role, version in versions.items():
        _servable(registry, version, role)
    before = current(registry)
    for role, share in shares.items():
        has_version = versions.get(role) or (before.canary if role == CANARY else before.shadow)
        if share > 0 and not has_version and not clear:
            raise SplitRefusedError(f"{role}: no version has the role; name one (--{role}-version)")
    name = registry.model_name
    if clear:
        shares = {CANARY: 0.0, SHADOW: 0.0}
    # a role's version moves before its share rises, and its share falls before its version goes
    for role, version in versions.items():
        registry.move(role, version, expected=before.canary if role == CANARY else before.shadow)
    for role, share in shares.items():
        registry.client.set_registered_model_tag(name, ROLE_SHARES[role], f"{share:g}")
    if clear:
        for role, held in ((CANARY, before.canary), (SHADOW, before.shadow)):
            if held is not None:
                registry.drop(role)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    registry.client.set_registered_model_tag(name, ModelTag.TRAFFIC_CHANGED, f"{at} by {by}: {reason}")
    return current(registry)
