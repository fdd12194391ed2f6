"""The model repository of one worker: several registered models, each with the versions its aliases name,
and versions asked for by path (the shape of Triton's and MLServer's model repositories).

Each served model follows ``champion`` (required: the worker is ready when every model's champion is
loaded) and, when they exist, ``challenger``, ``canary`` and ``shadow``: one ``Follower`` per alias, all
checked by one thread, which also reads the registered model's traffic split (``models/traffic.py``): the
share of requests the canary answers and the share copied to the shadow.

A version asked for by path (``/v2/models/{name}/versions/{v}``) that no alias holds is loaded on first use
if it is registered and passed its gate, self-tested like any other, and kept among the pinned versions
under a memory budget (the size of their ONNX files; the least recently used is let go first; a version an
alias holds is never let go for the budget). Every lookup is a dictionary read: a request never waits on the
registry unless it asks for a version not loaded yet.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from models.registry import CANARY, CHALLENGER, CHAMPION, SHADOW, Tag
from models.traffic import NONE, Shares
from serving.follower import REGISTRY_CLIENT_ENV, Follower
from serving.model import (
    LoadedModel,
    ModelUnavailableError,
    NotRegisteredError,
    model_tags,
    resolve_version,
    with_alias,
)

logger = logging.getLogger("mlops.serving")

ROLES = (CHAMPION, CHALLENGER, CANARY, SHADOW)  # the aliases a worker loads, champion first
PASSED = "passed"  # the gate's verdict that lets a version be served by path
EVERY = "*"  # in the served names: also every registered model that has a champion, found at each poll
REFUSAL_TTL_S = 10.0  # a refused version is answered from memory this long (no registry read per request)


class VersionRefused(Exception):  # noqa: N818 - a refusal, with the status a transport answers it with
    """A version asked for by path that is not served: ``status`` 404 (not registered) or 409 (registered,
    but not servable: it did not pass its gate, or failed to load or self-test)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Entry:
    """One loaded version and why it is loaded (the aliases holding it, or ``pinned``)."""

    name: str
    version: str
    reasons: tuple[str, ...]


@dataclass
class Served:
    """One registered model in this worker: a follower per alias, and the versions pinned by path."""

    name: str
    followers: dict[str, Follower]
    pinned: OrderedDict[str, LoadedModel] = field(default_factory=OrderedDict)
    shares: Shares = NONE  # the registered model's split, read at each poll

    @property
    def champion(self) -> LoadedModel | None:
        return self.followers[CHAMPION].current

    def answering(self, key: str) -> LoadedModel | None:
        """The version that answers a request with routing key ``key``: the canary for its share of keys
        (while it is loaded), else the champion."""
        if self.shares.canary > 0.0:
            canary = self.followers[CANARY].current
            if canary is not None and self.shares.to_canary(key):
                return canary
        return self.champion

    def shadowing(self, key: str, answered: LoadedModel) -> LoadedModel | None:
        """The version a copy of the request goes to, if any: the shadow, for its share of keys, unless it
        is the version that answered."""
        if self.shares.shadow <= 0.0:
            return None
        shadow = self.followers[SHADOW].current
        if shadow is None or shadow.ref.version == answered.ref.version or not self.shares.to_shadow(key):
            return None
        return shadow

    def by_alias(self) -> dict[str, LoadedModel]:
        return {alias: f.current for alias, f in self.followers.items() if f.current is not None}

    def held(self, version: str) -> LoadedModel | None:
        for model in self.by_alias().values():
            if model.ref.version == version:
                return model
        return self.pinned.get(version)

    def versions(self) -> list[str]:
        """Loaded versions, the champion's first, then by alias, then pinned (most recent use first)."""
        found: list[str] = []
        for model in [*self.by_alias().values(), *reversed(self.pinned.values())]:
            if model.ref.version not in found:
                found.append(model.ref.version)
        return found


def onnx_mib(model: LoadedModel, cache_dir: Path) -> float:
    """What a pinned version costs against the budget: the size of its ONNX files in the cache."""
    folder = cache_dir / model.ref.name / model.ref.version / "onnx"
    return sum(f.stat().st_size for f in folder.rglob("*.onnx")) / 2**20


@dataclass
class Repository:
    tracking_uri: str
    names: tuple[str, ...]
    cache_dir: Path
    poll_s: float
    budget_mib: float = 512.0
    on_event: Callable[[str, str], None] = field(default=lambda kind, detail: None)
    models: dict[str, Served] = field(init=False)
    discover: bool = field(init=False)
    _refusals: dict[tuple[str, str], tuple[float, VersionRefused]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.discover = EVERY in self.names
        self.names = tuple(n for n in self.names if n != EVERY)
        if not self.names:
            raise ValueError("a repository serves at least one model by name (the default one)")
        self.models = {name: self._served(name) for name in self.names}

    def _served(self, name: str) -> Served:
        served = Served(name, self._followers(name))
        for follower in served.followers.values():
            follower.reuse = served.held
        return served

    def _followers(self, name: str) -> dict[str, Follower]:
        return {
            alias: Follower(
                tracking_uri=self.tracking_uri,
                model_name=name,
                cache_dir=self.cache_dir,
                poll_s=self.poll_s,
                alias=alias,
                optional=alias != CHAMPION,
                on_event=self.on_event,
            )
            for alias in ROLES
        }

    @property
    def default(self) -> Served:
        """The first model named: the one the named-feature routes (``/predict``) answer with."""
        return self.models[self.names[0]]

    @property
    def ready(self) -> bool:
        return all(served.champion is not None for served in self.models.values())

    def followers(self) -> Iterable[Follower]:
        for served in self.models.values():
            yield from served.followers.values()

    # --- following ------------------------------------------------------------------------------------------

    def check(self) -> bool:
        """Every alias of every model once, champions first; whether anything served changed."""
        found = self._discover() if self.discover else False
        ordered = sorted(self.followers(), key=lambda f: f.alias != CHAMPION)
        changed = [f.check() for f in ordered]
        split = [self._read_shares(served) for served in self.models.values()]
        return found or any(changed) or any(split)

    def _read_shares(self, served: Served) -> bool:
        """The model's split from its tags; kept as it was while the registry cannot answer."""
        try:
            shares = Shares.from_tags(model_tags(self.tracking_uri, served.name))
        except ModelUnavailableError as exc:
            logger.warning("repository: cannot read the traffic split of %s: %s", served.name, exc)
            return False
        if shares == served.shares:
            return False
        served.shares = shares
        self.on_event("shares", f"{served.name} canary={shares.canary:g}% shadow={shares.shadow:g}%")
        logger.info(
            "repository: %s split canary %g%%, shadow %g%%", served.name, shares.canary, shares.shadow
        )
        return True

    def _discover(self) -> bool:
        """Serve every registered model that has a champion now (a model once served stays served)."""
        try:
            names = with_alias(self.tracking_uri, CHAMPION)
        except ModelUnavailableError as exc:  # the registry is away: the next poll asks again
            logger.warning("repository: cannot list the models with a champion: %s", exc)
            return False
        new = [name for name in names if name not in self.models]
        if not new:
            return False
        # copied, then replaced in one assignment: a request reading the old mapping is never disturbed
        self.models = {**self.models, **{name: self._served(name) for name in new}}
        self.names = (*self.names, *new)
        for name in new:
            self.on_event("discovered", name)
            logger.info("repository: serving %s (it has a champion)", name)
        return True

    def start(self) -> None:
        """Check now (so the worker is ready as soon as it can be), then keep following in a thread."""
        for key, value in REGISTRY_CLIENT_ENV.items():
            os.environ.setdefault(key, value)
        self.check()
        self._thread = threading.Thread(target=self._follow, name="alias-follower", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # the follower must outlive any surprise; the next poll tries again
                logger.exception("alias follower check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- versions by path ---------------------------------------------------------------------------------

    def held(self, name: str, version: str) -> LoadedModel | None:
        """The version if this worker holds it (by an alias or pinned): a dictionary read."""
        served = self.models.get(name)
        if served is None:
            return None
        model = served.held(version)
        if model is not None and version in served.pinned:
            with self._lock:
                if version in served.pinned:
                    served.pinned.move_to_end(version)  # most recently used
        return model

    def load_version(self, name: str, version: str) -> LoadedModel:
        """Load a registered version that passed its gate, self-test it, pin it; refuse any other.

        Blocking (registry reads, a download, a self-test): a transport calls it off its event loop.
        """
        served = self.models[name]
        found = self.held(name, version)
        if found is not None:
            return found
        if not version.isdigit():
            raise VersionRefused(f"version: {version!r} is not a version number", 404)
        now = time.monotonic()
        refused = self._refusals.get((name, version))
        if refused is not None and now - refused[0] < REFUSAL_TTL_S:
            raise refused[1]
        try:
            model = self._load(served, version)
        except VersionRefused as exc:
            if len(self._refusals) >= 1024:  # many versions asked for: keep only the fresh refusals
                self._refusals = {k: v for k, v in self._refusals.items() if now - v[0] < REFUSAL_TTL_S}
            self._refusals[(name, version)] = (now, exc)
            raise
        self._refusals.pop((name, version), None)
        return model

    def _load(self, served: Served, version: str) -> LoadedModel:
        name = served.name
        try:
            ref, tags = resolve_version(self.tracking_uri, name, version)
        except NotRegisteredError:
            raise VersionRefused(f"version: {version!r} of {name!r} is not registered", 404) from None
        except ModelUnavailableError as exc:
            raise VersionRefused(f"version: {version!r} of {name!r} cannot be loaded: {exc}", 409) from None
        verdict = tags.get(Tag.GATE_VERDICT, "none")
        if verdict != PASSED:
            raise VersionRefused(
                f"version: {version!r} of {name!r} has gate verdict {verdict!r}; only a version that "
                "passed its gate is served by path",
                409,
            )
        try:
            model = served.followers[CHAMPION].load(ref)
        except Exception as exc:  # noqa: BLE001 - a refusal naming why, the worker keeps serving
            raise VersionRefused(
                f"version: {version!r} of {name!r} failed to load: {type(exc).__name__}: {exc}", 409
            ) from None
        with self._lock:
            served.pinned[version] = model
            served.pinned.move_to_end(version)
            self._evict(model)
        self.on_event("pinned", f"{name} v{version}")
        logger.info("repository: %s v%s loaded by path", name, version)
        return model

    def _evict(self, keep: LoadedModel) -> None:
        """Let go of the least recently used pinned versions until the pinned ones fit the budget."""
        pinned = [(served, v, m) for served in self.models.values() for v, m in served.pinned.items()]
        total = sum(onnx_mib(m, self.cache_dir) for _, _, m in pinned)
        for served, version, model in pinned:  # oldest first within each model
            if total <= self.budget_mib:
                break
            if model is keep:
                continue
            del served.pinned[version]
            total -= onnx_mib(model, self.cache_dir)
            self.on_event("unpinned", f"{served.name} v{version}")
            logger.info("repository: %s v%s let go (pinned versions over %g MiB)", served.name, version,
                        self.budget_mib)  # fmt: skip

    # --- what is loaded, and why --------------------------------------------------------------------------

    def index(self) -> list[Entry]:
        entries: list[Entry] = []
        for served in self.models.values():
            reasons: dict[str, list[str]] = {}
            for alias, model in served.by_alias().items():
                reasons.setdefault(model.ref.version, []).append(f"alias {alias}")
            for version in reversed(served.pinned):
                reasons.setdefault(version, []).append("pinned by path")
            for version in served.versions():
                entries.append(Entry(served.name, version, tuple(reasons[version])))
        return entries
