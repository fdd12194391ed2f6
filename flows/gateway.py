"""The model registry as a flow run sees it: one gateway, built once per flow run.

The flows' tasks ask ``gateway(settings)`` for it instead of connecting to MLflow themselves: within one flow
run (and its tasks, in any thread) they share one client, one check that the experiment exists, and one
setting of MLflow's global URIs. Reads and moves of aliases, version tags, the deployment history,
experiments, golden rows and profiles go through its methods; a stage's own record function (the gate's
verdict, the model card, a deployment record) takes ``gateway.client``, beside the stage it records.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from flows import promote, rollout
from flows.tracking import alias_version, connect, ensure_experiment, point_mlflow
from models.registry import PROFILE_ARTIFACT, Tag
from models.settings import Settings

# A worker that runs flows in its own process keeps a few; each holds only a client.
KEPT = 16


@dataclass(frozen=True)
class Registry:
    """One registered model's registry, through one client."""

    client: MlflowClient
    settings: Settings

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    def alias(self, alias: str) -> str | None:
        """The version ``alias`` points at; None when the alias or the model does not exist."""
        return alias_version(self.client, self.model_name, alias)

    def move(self, alias: str, version: str, expected: str | None) -> str | None:
        """Compare-and-set: point ``alias`` at ``version`` only if it still points at ``expected``.

        Returns where it pointed; raises ``PromotionSupersededError`` when another run moved it meanwhile.
        """
        return promote.move_alias(self.client, self.model_name, alias, version, expected)

    def drop(self, alias: str) -> None:
        self.client.delete_registered_model_alias(self.model_name, alias)

    def version(self, version: str) -> ModelVersion:
        return self.client.get_model_version(self.model_name, version)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.version(version).tags)

    def set_tags(self, version: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, version, key, value)

    def holdout_metrics(self, version: str) -> dict[str, float]:
        """The metrics the gate judged the version on (``holdout_*`` of its training run), unprefixed."""
        metrics = self.client.get_run(str(self.version(version).run_id)).data.metrics
        return {k.removeprefix("holdout_"): v for k, v in metrics.items() if k.startswith("holdout_")}

    def history(self) -> list[str]:
        """The versions that were live, oldest first (the deployment history rollback walks back)."""
        return rollout.history(self.client, self.model_name)

    def experiment(self, suffix: str = "") -> str:
        """The id of the training experiment, or of ``<experiment>-<suffix>`` (created when missing)."""
        return ensure_experiment(self.client, self.settings, suffix)

    def golden(self, version: str) -> dict[str, Any]:
        """The golden rows and the answers the version gave them at conversion (its post-deploy check)."""
        loaded: dict[str, Any] = mlflow.artifacts.load_dict(self.tags(version)[Tag.GOLDEN_URI])
        return loaded

    def profile(self, version: str) -> dict[str, Any]:
        """The training data's profile the monitor compares live inputs with."""
        uri = f"runs:/{self.version(version).run_id}/{PROFILE_ARTIFACT}"
        loaded: dict[str, Any] = mlflow.artifacts.load_dict(uri)
        return loaded


_built: OrderedDict[tuple[str, ...], Registry] = OrderedDict()
_lock = threading.Lock()


def _flow_run() -> str:
    if "prefect" not in sys.modules:  # not imported: no flow run in this process (a command such as status)
        return ""
    import prefect.runtime.flow_run

    return str(prefect.runtime.flow_run.id or "")  # "" outside a flow run: the command's own process


def gateway(settings: Settings) -> Registry:
    """The gateway of the current flow run for these settings' registry and model, built on first use."""
    key = (
        _flow_run(),
        settings.resolved_tracking_uri,
        settings.model_name,
        settings.experiment_name,
        settings.resolved_artifact_uri,
    )
    with _lock:
        built = _built.get(key)
        if built is None:
            built = _built[key] = Registry(connect(settings), settings)
            while len(_built) > KEPT:
                _built.popitem(last=False)
        else:
            _built.move_to_end(key)
            point_mlflow(settings)  # another run in this process may have pointed MLflow elsewhere
    return built
