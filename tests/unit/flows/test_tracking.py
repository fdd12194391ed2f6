from pathlib import Path

from flows.tracking import PROJECT_ROOT, alias_version, connect, git_commit
from tests.conftest import make_settings


def test_git_commit_outside_a_repository_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "unknown"


def test_git_commit_of_the_project() -> None:
    commit = git_commit(PROJECT_ROOT)
    assert commit == "unknown" or len(commit.removesuffix("-dirty")) == 40


def test_connect_creates_the_store_and_experiment_under_the_state_folder(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    client = connect(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    assert experiment is not None
    assert experiment.artifact_location == settings.resolved_artifact_uri
    assert (tmp_path / "state" / "mlflow.db").is_file()
    assert alias_version(client, settings.model_name, "champion") is None
