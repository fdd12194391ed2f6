"""The one settings object: every URI, port, path and default threshold, validated once.

Values come from environment variables prefixed ``MLOPS_`` (for example ``MLOPS_STATE_DIR``,
``MLOPS_TRACKING_URI``). Per-run knobs are flow parameters, not settings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_USERINFO = re.compile(r"://[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` with the user and password of any URI in it replaced: safe for logs and errors."""
    return _USERINFO.sub("://***@", text)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLOPS_", frozen=True, extra="ignore")

    state_dir: Path = Field(default=Path(".mlops"), description="All local state lives here.")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking/registry URI; SQLite under state_dir if unset."
    )
    artifact_uri: str | None = Field(
        default=None, description="Artifact root for new experiments; state_dir/artifacts if unset."
    )
    model_name: str = "breast-cancer-classifier"
    experiment_name: str = "breast-cancer-classifier"
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=3000, ge=1, le=65535)
    # Start-up limits, chosen for a busy 2-core machine that imports without bytecode (the slowest start seen:
    # 26 s for the service, 35 s for a Prefect server on a new database); each error names its setting.
    serve_start_timeout_s: float = Field(
        default=120.0, gt=0, description="`bentoml serve` ready (a model loaded and self-tested) within this."
    )
    prefect_start_timeout_s: float = Field(
        default=180.0,
        gt=0,
        description="A Prefect server we start (temporary or the stack's) answers within this.",
    )
    mlflow_start_timeout_s: float = Field(
        default=120.0, gt=0, description="The stack's MLflow server answers within this."
    )
    worker_start_timeout_s: float = Field(
        default=120.0, gt=0, description="The stack's Prefect worker reports to its server within this."
    )
    worker_poll_s: float = Field(
        default=2.0,
        gt=0,
        description="How often the stack's Prefect worker asks for runs to start (Prefect's default: 10 s).",
    )
    serve_workers: int = Field(default=2, ge=1, le=64, description="bentoml serve worker processes.")
    swap_poll_s: float = Field(default=1.0, gt=0, description="How often each worker checks the alias.")
    max_request_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="Larger bodies get a 413.")
    inference_log_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="Segment rotation size.")
    feedback_window_h: float = Field(
        default=72.0, gt=0, description="Labels are taken for requests answered within this many hours."
    )
    inference_log_policy: Literal["fail_open", "fail_closed"] = Field(
        default="fail_open",
        description="When a record cannot be written: answer marked logged: false, or refuse with 503.",
    )
    log_compact_after_days: float = Field(
        default=7.0, ge=0, description="Sealed log segments older than this are compacted into Parquet."
    )
    log_retention_days: float = Field(
        default=183.0,
        gt=0,
        description="Log segments older than this are deleted (AI Act Art. 19: 6 months).",
    )
    api_key: SecretStr | None = Field(
        default=None, description="If set, inference routes need this bearer token."
    )
    serve_models: list[str] = Field(
        default_factory=list,
        description=(
            'Registered models each worker serves (JSON list; "*": also every model with a champion); '
            "unset: model_name alone."
        ),
    )
    version_budget_mib: float = Field(
        default=512.0,
        gt=0,
        description="ONNX size of the versions a worker keeps loaded by path (least recently used let go).",
    )
    grpc_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Also serve the Open Inference Protocol over gRPC on this port, in each worker.",
    )
    tls_certfile: Path | None = Field(default=None, description="Serve HTTPS with this certificate ...")
    tls_keyfile: Path | None = Field(default=None, description="... and this private key.")
    # Batch scoring (`mlops batch-score`, the batch-score deployment): where its tasks run.
    dask_address: str | None = Field(
        default=None,
        description="Dask scheduler for batch scoring (tcp://host:8786); unset: a local cluster here.",
    )
    batch_workers: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Worker processes of the local Dask cluster batch scoring starts.",
    )
    batch_chunk_rows: int = Field(
        default=100_000, ge=1, description="Rows read, checked and scored at a time: bounds a task's memory."
    )
    # The local stack (`mlops stack`): the servers it starts, and the databases behind them.
    prefect_port: int = Field(default=4200, ge=1, le=65535, description="Prefect server and UI.")
    mlflow_port: int = Field(default=5000, ge=1, le=65535, description="MLflow tracking server and UI.")
    mlflow_backend_store_uri: str | None = Field(
        default=None,
        description="Database behind the stack's MLflow server (postgresql://...); SQLite if unset.",
    )
    prefect_database_url: str | None = Field(
        default=None,
        description="Database behind the stack's Prefect server (postgresql+asyncpg://...); SQLite if unset.",
    )

    @property
    def served_models(self) -> tuple[str, ...]:
        """The models a serving worker holds: ``serve_models`` (``model_name`` first when it names only
        ``*``), else ``model_name`` alone. The first is the default model (the named-feature routes)."""
        names = tuple(dict.fromkeys(self.serve_models))
        return names if any(n != "*" for n in names) else (self.model_name, *names)

    @property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.state_path / 'mlflow.db'}"

    @property
    def resolved_artifact_uri(self) -> str:
        return self.artifact_uri or (self.state_path / "artifacts").as_uri()

    @property
    def model_cache_dir(self) -> Path:
        return self.state_path / "model-cache"

    @property
    def inference_log_dir(self) -> Path:
        return self.state_path / "inference-log"

    @property
    def feedback_log_dir(self) -> Path:
        return self.state_path / "feedback-log"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.serve_host}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.serve_host}:{self.prefect_port}/api"

    def to_env(self) -> dict[str, str]:
        """These settings as the ``MLOPS_`` variables another process (a worker, a server) reads."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"MLOPS_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
        env["MLOPS_STATE_DIR"] = str(self.state_path)
        env["MLOPS_TRACKING_URI"] = self.resolved_tracking_uri
        return env

    @property
    def serve_url(self) -> str:
        scheme = "https" if self.tls_certfile else "http"
        return f"{scheme}://{self.serve_host}:{self.serve_port}"
