from pathlib import Path

import pytest
from pydantic import ValidationError

from models.settings import Settings


def test_defaults_keep_all_state_under_one_folder(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert settings.resolved_tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert settings.resolved_artifact_uri == (tmp_path / "artifacts").resolve().as_uri()
    assert settings.model_cache_dir.is_relative_to(tmp_path.resolve())
    assert settings.serve_url == "http://127.0.0.1:3000"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_TRACKING_URI", "postgresql://db/mlflow")
    monkeypatch.setenv("MLOPS_SERVE_PORT", "3999")
    settings = Settings()
    assert settings.resolved_tracking_uri == "postgresql://db/mlflow"
    assert settings.serve_port == 3999


def test_invalid_values_are_refused_on_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_SERVE_PORT", "70000")
    with pytest.raises(ValidationError, match="serve_port"):
        Settings()


def test_credentials_in_uris_are_redacted() -> None:
    from models.settings import redact

    text = "API request to http://mlops:s3cret@127.0.0.1:5000/api failed; db postgresql://u:p@h/db"
    assert redact(text) == "API request to http://***@127.0.0.1:5000/api failed; db postgresql://***@h/db"
    assert redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
