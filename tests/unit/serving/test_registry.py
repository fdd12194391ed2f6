"""The MLflow-free registry reader answers as the MLflow client does, on a real SQLite store."""

import shutil
import sqlite3
from pathlib import Path

import pytest

from flows.tracking import connect
from models.registry import CHAMPION, Tag
from serving.registry import (
    MlflowReader,
    NotRegisteredError,
    Reader,
    RegistryReadError,
    RestReader,
    SchemaUnknownError,
    SqliteReader,
    WithFallback,
    direct_reader,
    download,
    reader,
)
from tests.conftest import Registered


def answers(store: Reader, name: str, model_id: str, run_id: str) -> tuple[object, ...]:
    return (
        store.alias_version(name, CHAMPION),
        store.aliased(name, CHAMPION),
        store.version(name, store.alias_version(name, CHAMPION)),
        store.model_location(model_id),
        store.run_artifact_uri(run_id),
        store.with_alias(CHAMPION),
        store.with_alias("challenger-x"),
        store.model_tags(name),
    )


def test_sqlite_reader_answers_as_the_mlflow_client(champion: Registered) -> None:
    settings = champion.settings
    uri = settings.resolved_tracking_uri
    direct = direct_reader(uri)
    assert isinstance(direct, SqliteReader)
    client = MlflowReader(uri)
    connect(settings).set_registered_model_tag(settings.model_name, "reader.check", "on the model")
    aliased = client.aliased(settings.model_name, CHAMPION)
    model_id = aliased.tags[Tag.ONNX_URI].removeprefix("models:/")
    expected = answers(client, settings.model_name, model_id, champion.run_id)
    assert answers(direct, settings.model_name, model_id, champion.run_id) == expected
    assert expected[0] == champion.version and aliased.run_id == champion.run_id
    assert expected[2] == aliased  # a version read by its number is the one read by its alias
    assert expected[5:7] == ([settings.model_name], [])  # the models that have the alias
    assert client.model_tags(settings.model_name)["reader.check"] == "on the model"  # the model's own


def test_missing_names_are_refused_the_same_way(champion: Registered) -> None:
    uri = champion.settings.resolved_tracking_uri
    for store in (direct_reader(uri), MlflowReader(uri)):
        assert store is not None
        with pytest.raises(NotRegisteredError, match="name=nope not found"):
            store.aliased("nope", CHAMPION)
        with pytest.raises(NotRegisteredError, match="alias challenger-x not found"):
            store.alias_version(champion.settings.model_name, "challenger-x")
        with pytest.raises(NotRegisteredError, match="not found"):
            store.version(champion.settings.model_name, "999")
        with pytest.raises(NotRegisteredError, match="name=nope not found"):
            store.model_tags("nope")


def test_a_missing_database_is_unavailable_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    with pytest.raises(RegistryReadError, match="no registry database"):
        reader(f"sqlite:///{path}").alias_version("m", CHAMPION)
    assert not path.exists()


def test_a_schema_the_reader_does_not_know_falls_back_to_mlflow(champion: Registered, tmp_path: Path) -> None:
    settings = champion.settings
    original = Path(settings.resolved_tracking_uri.removeprefix("sqlite:///"))
    changed = tmp_path / "changed.db"
    shutil.copy2(original, changed)
    with sqlite3.connect(changed) as db:
        db.execute("ALTER TABLE registered_model_aliases RENAME COLUMN version TO model_version")
    direct = SqliteReader(changed)
    with pytest.raises(SchemaUnknownError):
        direct.alias_version(settings.model_name, CHAMPION)
    combined = WithFallback(direct, MlflowReader(settings.resolved_tracking_uri))
    assert combined.alias_version(settings.model_name, CHAMPION) == champion.version


def test_http_stores_are_read_over_rest_with_the_uri_credentials() -> None:
    store = direct_reader("https://user:p%40ss@registry.example:8443/prefix/")
    assert store == RestReader("https://registry.example:8443/prefix", "Basic dXNlcjpwQHNz")
    assert direct_reader("postgresql://postgres@127.0.0.1:5432/mlflow") is None
    assert isinstance(reader("postgresql://postgres@127.0.0.1:5432/mlflow"), MlflowReader)


def test_an_unreachable_server_is_unavailable_with_its_address_and_without_credentials() -> None:
    store = RestReader.from_uri("http://user:secret@127.0.0.1:9")
    with pytest.raises(RegistryReadError, match=r"http://127\.0\.0\.1:9 is unreachable") as raised:
        store.alias_version("m", CHAMPION)
    assert "secret" not in str(raised.value)


def test_download_copies_local_files_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "store" / "onnx"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"x")
    (tmp_path / "store" / "golden.json").write_text("{}")
    download(folder.as_uri(), tmp_path / "a")
    download(str(tmp_path / "store" / "golden.json"), tmp_path / "b")
    assert (tmp_path / "a" / "onnx" / "model.onnx").read_bytes() == b"x"
    assert (tmp_path / "b" / "golden.json").read_text() == "{}"
    with pytest.raises(RegistryReadError, match="no artifact at"):
        download((tmp_path / "missing").as_uri(), tmp_path / "c")


def test_a_relative_sqlite_uri_is_read_from_the_working_folder(
    champion: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Path(champion.settings.resolved_tracking_uri.removeprefix("sqlite:///"))
    monkeypatch.chdir(database.parent)
    name = champion.settings.model_name
    assert reader(f"sqlite:///{database.name}").alias_version(name, CHAMPION) == champion.version
