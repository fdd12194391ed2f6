"""The split between traffic roles: which requests the ``canary`` answers and which are copied to the
``shadow``.

The shares are tags on the registered model (``ModelTag.CANARY_PERCENT``, ``ModelTag.SHADOW_PERCENT``, each
0-100), so every worker and every replica applies the same split, read at each alias poll. A request's
place in the split is a hash of its routing key (the ``x-routing-key`` header, else its request id) into
[0, 100): the same key always lands in the same place, so one consumer sees one version, and raising a
share only adds keys to the canary (the ones it had stay). The canary's and the shadow's hashes differ (a
role's name salts its hash), so which requests are mirrored does not depend on which are on the canary.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from models.registry import CANARY, SHADOW, ModelTag

logger = logging.getLogger("mlops.serving")

ROUTING_HEADER = "x-routing-key"
MAX_KEY_CHARS = 256  # a longer key is cut: the split stays a function of what a consumer sends


def _percent(tags: Mapping[str, str], key: str) -> float:
    """A share from its tag; a missing one is 0, and so is one that is not a number in [0, 100] (logged):
    a typo in a tag must never send traffic to a version nobody meant to expose."""
    raw = tags.get(key)
    if raw is None or raw.strip() == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 100.0:
        logger.warning("traffic: tag %s=%r is not a percentage in [0, 100]; the share is 0", key, raw)
        return 0.0
    return value


@dataclass(frozen=True)
class Shares:
    """Percentages of requests: answered by the canary, copied to the shadow."""

    canary: float = 0.0
    shadow: float = 0.0

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Shares:
        return cls(_percent(tags, ModelTag.CANARY_PERCENT), _percent(tags, ModelTag.SHADOW_PERCENT))

    def to_canary(self, key: str) -> bool:
        return takes(self.canary, key, CANARY)

    def to_shadow(self, key: str) -> bool:
        return takes(self.shadow, key, SHADOW)


NONE = Shares()


def bucket(key: str, role: str) -> float:
    """Where ``key`` falls in [0, 100) for ``role``: uniform over keys, the same for the same key."""
    digest = hashlib.blake2b(key[:MAX_KEY_CHARS].encode(), digest_size=8, person=role.encode()[:16])
    return int.from_bytes(digest.digest(), "big") / 2**64 * 100.0


def takes(share: float, key: str, role: str) -> bool:
    """Whether a request with ``key`` is in ``role``'s share (0: never, 100: always)."""
    return share > 0.0 and (share >= 100.0 or bucket(key, role) < share)


def routing_key(header: str | None, request_id: str, version: str | None, probe: bool) -> str | None:
    """The key a request is split by: the consumer's own (``x-routing-key``), else its request id. None
    for a request that is not split: one asking for a version by path, or a deploy check's probe (which
    must reach the champion it checks)."""
    if version is not None or probe:
        return None
    return header if header else request_id
