"""Follow the registry alias: load a new version beside the old one, self-test it, then swap.

One ``Follower`` per worker process. ``current`` is replaced by a single reference assignment, so a request
that already took the old model finishes on it and the next one gets the new one: no request sees a
half-loaded model and none fails because of a swap. A version that fails to load or fails its self-test is
remembered and not retried until the alias moves again; the old model keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import CHAMPION
from serving.model import (
    LoadedModel,
    ModelRef,
    ModelUnavailableError,
    NotRegisteredError,
    alias_version,
    fetch,
    fetch_golden,
    resolve,
)

logger = logging.getLogger("mlops.serving")

SELF_TEST_TOLERANCE = 1e-5
# The poll is the follower's retry. The direct REST reader never retries and reads the timeout from here;
# the MLflow client (the fallback for other stores) would otherwise retry an unreachable tracking server
# for about two minutes (7 attempts, backoff factor 2) inside one check, so a worker would notice a
# recovered registry, and a deploy made right after, that much later.
REGISTRY_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class SelfTestError(RuntimeError):
    """The loaded model's answers on its golden rows differ from those recorded at gate time."""


def self_test(model: LoadedModel, golden: dict[str, Any], tolerance: float = SELF_TEST_TOLERANCE) -> None:
    outputs = model.run(model.feeds(golden["records"]))
    if "labels" in golden:
        labels = [v.item() if isinstance(v, np.generic) else v for v in outputs[0].ravel()]
        if labels != golden["labels"]:
            raise SelfTestError(f"labels {labels} differ from the golden {golden['labels']}")
        diff = float(np.max(np.abs(np.asarray(outputs[1]) - np.asarray(golden["probabilities"]))))
    else:
        diff = float(np.max(np.abs(np.asarray(outputs[0]).ravel() - np.asarray(golden["values"]))))
    if not diff <= tolerance:
        raise SelfTestError(f"outputs differ from the golden ones by {diff:.3g} (> {tolerance:g})")


@dataclass
class SwapStats:
    swaps: int = 0
    failures: int = 0
    registry_errors: int = 0
    last_error: str | None = None


@dataclass
class Follower:
    """Keeps ``current`` on the version the alias points at, checking every ``poll_s`` seconds."""

    tracking_uri: str
    model_name: str
    cache_dir: Path
    poll_s: float
    alias: str = CHAMPION
    # An optional alias (challenger, canary, shadow) may be absent: then nothing is held and nothing is
    # wrong; when it is removed, the version it held is let go. The champion is never let go.
    optional: bool = False
    # A version another alias of the same model already holds is taken from there, not loaded again.
    reuse: Callable[[str], LoadedModel | None] = field(default=lambda version: None)
    on_event: Callable[[str, str], None] = field(default=lambda kind, detail: None)
    current: LoadedModel | None = None
    stats: SwapStats = field(default_factory=SwapStats)
    _refused: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.current is not None

    def load(self, ref: ModelRef) -> LoadedModel:
        model = LoadedModel.load(ref, fetch(ref, self.cache_dir))
        self_test(model, fetch_golden(ref, self.cache_dir))
        return model

    def check(self) -> bool:
        """Follow the alias once; return whether the served model changed.

        A poll that finds the alias where it was costs one registry read: the full resolution (the
        version's tags, its model's and run's locations) runs only when the alias has moved.
        """
        current = self.current
        try:
            version = alias_version(self.tracking_uri, self.model_name, self.alias)
            if (current is not None and version == current.ref.version) or version in self._refused:
                return False
            ref = resolve(self.tracking_uri, self.model_name, self.alias)
        except NotRegisteredError as exc:
            if not self.optional:
                return self._registry_error(exc)
            if current is None:
                return False
            self.current = None
            self._report("unloaded", f"v{current.ref.version}: the alias is gone")
            return True
        except ModelUnavailableError as exc:
            return self._registry_error(exc)
        if ref.version in self._refused:
            return False
        try:
            model = self.reuse(ref.version) or self.load(ref)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old model serving
            self._refused.add(ref.version)
            self.stats.failures += 1
            self._report("swap_failed", f"v{ref.version}: {type(exc).__name__}: {exc}")
            return False
        self.current = model
        self.stats.swaps += 1
        previous = current.ref.version if current else None
        self._report("swapped", f"v{previous} -> v{ref.version}")
        return True

    def _registry_error(self, exc: ModelUnavailableError) -> bool:
        self.stats.registry_errors += 1
        self._report("registry_error", str(exc))
        return False

    def _report(self, kind: str, detail: str) -> None:
        news = kind in ("swapped", "unloaded")
        if not news:
            self.stats.last_error = f"{kind}: {detail}"
        log = logger.info if news else logger.warning
        log("alias %s@%s: %s %s", self.model_name, self.alias, kind, detail)
        self.on_event(kind, detail)

    def start(self) -> None:
        """Check now (so a worker is ready as soon as it can be), then keep following in a thread."""
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
