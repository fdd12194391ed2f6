"""MLflow connection and small registry helpers shared by the stages."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import mlflow
from mlflow import MlflowClient

from models.settings import Settings, redact

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def point_mlflow(settings: Settings) -> None:
    """Point MLflow's global tracking and registry URIs (``mlflow.start_run``, ``load_dict``) at the store."""
    settings.state_path.mkdir(parents=True, exist_ok=True)
    # MLflow prints "View run ... at: <tracking URI>" after each run, credentials in the URI included.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per download in the logs
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    mlflow.set_registry_uri(settings.resolved_tracking_uri)


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the settings' store and make sure the experiment exists; return a new client.

    Flows use ``flows.gateway.gateway`` instead, which connects once per flow run.
    """
    point_mlflow(settings)
    uri = settings.resolved_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    ensure_experiment(client, settings)
    return client


def ensure_experiment(client: MlflowClient, settings: Settings, suffix: str = "") -> str:
    """The id of the experiment ``<experiment_name>[-<suffix>]``, created (its artifacts under the artifact
    root, or ``<root>/<suffix>``) if it does not exist: training runs, deployment and monitoring records."""
    name = f"{settings.experiment_name}-{suffix}" if suffix else settings.experiment_name
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    root = settings.resolved_artifact_uri
    return str(client.create_experiment(name, artifact_location=f"{root}/{suffix}" if suffix else root))


def experiment_id(client: MlflowClient, settings: Settings) -> str:
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        raise LookupError(f"experiment {settings.experiment_name!r} does not exist")
    return str(experiment.experiment_id)


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The commit the code ran from, with ``-dirty`` when the tree has changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


class RegistryUnavailableError(RuntimeError):
    """The MLflow tracking server does not answer: nothing can be trained, registered or promoted."""


def registry_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise RegistryUnavailableError unless the tracking server answers ``/health`` (local store: no-op)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        status = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout_s).status_code
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(
            redact(
                f"the MLflow registry at {uri} is unreachable ({type(exc).__name__}: {exc}); "
                "nothing was trained or registered"
            )
        ) from None
    if status != 200:
        raise RegistryUnavailableError(redact(f"the MLflow registry at {uri} answers /health with {status}"))
