"""Read the registry without importing MLflow: what a serving worker needs to follow an alias.

A worker needs four facts: the version an alias points at, that version's run and tags, where its ONNX
model's files are, and where its run's files are. Importing the MLflow client for them costs a worker
seconds of start-up (``import mlflow`` and its dependencies, pandas among them) before it can answer. So
the two stores this project runs on are read directly:

- ``sqlite:///`` (the default): the tables MLflow's SQL store writes, opened read-only (a reader never
  creates or migrates the database);
- ``http(s)://`` (``mlflow server``): the REST API MLflow's own client calls, with the credentials of the
  URI or of ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN`` and ``MLFLOW_TRACKING_INSECURE_TLS`` or
  ``MLFLOW_TRACKING_SERVER_CERT_PATH``, no retries (the follower's poll is the retry), and
  ``MLFLOW_HTTP_REQUEST_TIMEOUT``.

Artifacts on a local path or a ``file:`` URI (the project's stores, ``--no-serve-artifacts``) are copied.
Any other store, artifact scheme or a SQLite schema this reader does not know falls back to the MLflow
client, which then is imported: same answers, only slower to start. ``tests/unit/serving/test_registry.py``
checks both ways give the same answers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import sqlite3
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class RegistryReadError(RuntimeError):
    """The registry could not answer: the alias or model is missing, or the store is unreachable."""


class NotRegisteredError(RegistryReadError):
    """The store answered: no such registered model, version or alias (not an outage)."""


def _missing(error_code: str | None, message: str) -> bool:
    """MLflow's answer for something not registered: RESOURCE_DOES_NOT_EXIST, or (a missing alias)
    INVALID_PARAMETER_VALUE saying "not found"."""
    return error_code == "RESOURCE_DOES_NOT_EXIST" or (
        error_code == "INVALID_PARAMETER_VALUE" and "not found" in message
    )


@dataclass(frozen=True)
class AliasedVersion:
    version: str
    run_id: str
    tags: dict[str, str]


class Reader(Protocol):
    def alias_version(self, name: str, alias: str) -> str: ...
    def aliased(self, name: str, alias: str) -> AliasedVersion: ...
    def version(self, name: str, version: str) -> AliasedVersion: ...
    def model_location(self, model_id: str) -> str: ...
    def run_artifact_uri(self, run_id: str) -> str: ...
    def with_alias(self, alias: str) -> list[str]: ...
    def model_tags(self, name: str) -> dict[str, str]: ...


class SchemaUnknownError(RuntimeError):
    """The SQLite store's tables are not the ones this reader knows: use the MLflow client."""


@dataclass(frozen=True)
class SqliteReader:
    path: Path

    def _rows(self, sql: str, *params: str) -> list[tuple[Any, ...]]:
        if not self.path.is_file():
            raise RegistryReadError(f"no registry database at {self.path} (nothing registered yet)")
        try:
            with contextlib.closing(
                sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
            ) as db:
                return list(db.execute(sql, params).fetchall())
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if "no such column" in message:
                raise SchemaUnknownError(message) from exc
            # "no such table" while MLflow is still creating the database, "database is locked" under a
            # writer: both pass, and the next poll reads again
            raise RegistryReadError(f"registry database {self.path}: {message}") from exc

    def _one(self, what: str, sql: str, *params: str) -> tuple[Any, ...]:
        rows = self._rows(sql, *params)
        if len(rows) > 1:  # several MLflow workspaces hold the name: the client knows which one is meant
            raise SchemaUnknownError(f"{what}: {len(rows)} rows")
        if not rows:
            raise NotRegisteredError(f"{what} not found")
        return rows[0]

    def alias_version(self, name: str, alias: str) -> str:
        sql = "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?"
        if not self._rows("SELECT 1 FROM registered_models WHERE name = ?", name):
            raise NotRegisteredError(f"Registered Model with name={name} not found")  # MLflow's words
        return str(self._one(f"Registered model alias {alias}", sql, name, alias)[0])

    def aliased(self, name: str, alias: str) -> AliasedVersion:
        return self.version(name, self.alias_version(name, alias))

    def version(self, name: str, version: str) -> AliasedVersion:
        sql = "SELECT run_id FROM model_versions WHERE name = ? AND version = ?"
        (run_id,) = self._one(f"Model version {name} {version}", sql, name, version)
        sql = "SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?"
        tags = {str(k): "" if v is None else str(v) for k, v in self._rows(sql, name, version)}
        return AliasedVersion(version, str(run_id), tags)

    def model_location(self, model_id: str) -> str:
        sql = "SELECT artifact_location FROM logged_models WHERE model_id = ?"
        return str(self._one(f"Logged model {model_id}", sql, model_id)[0])

    def run_artifact_uri(self, run_id: str) -> str:
        sql = "SELECT artifact_uri FROM runs WHERE run_uuid = ?"
        return str(self._one(f"Run {run_id}", sql, run_id)[0])

    def with_alias(self, alias: str) -> list[str]:
        sql = "SELECT DISTINCT name FROM registered_model_aliases WHERE alias = ? ORDER BY name"
        return [str(name) for (name,) in self._rows(sql, alias)]

    def model_tags(self, name: str) -> dict[str, str]:
        if not self._rows("SELECT 1 FROM registered_models WHERE name = ?", name):
            raise NotRegisteredError(f"Registered Model with name={name} not found")
        sql = "SELECT key, value FROM registered_model_tags WHERE name = ?"
        return {str(k): "" if v is None else str(v) for k, v in self._rows(sql, name)}


def _credentials(userinfo: str) -> str | None:
    if userinfo:
        return "Basic " + base64.b64encode(urllib.parse.unquote(userinfo).encode()).decode()
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return f"Bearer {token}"
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return None


def _tls_context() -> ssl.SSLContext:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":  # the user's MLflow setting
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        return insecure
    context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    if client_cert := os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        context.load_cert_chain(client_cert)
    return context


@dataclass(frozen=True)
class RestReader:
    base: str  # scheme://host:port/prefix, without credentials
    authorization: str | None

    @classmethod
    def from_uri(cls, uri: str) -> RestReader:
        parts = urllib.parse.urlsplit(uri)
        userinfo, _, host = parts.netloc.rpartition("@")
        base = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        return cls(base, _credentials(userinfo))

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.base}/api/2.0/mlflow/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, headers={"accept": "application/json"})
        if self.authorization:
            request.add_header("authorization", self.authorization)
        timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"))
        context = _tls_context() if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            try:
                answer = json.loads(body)
                message, code = answer.get("message") or body, answer.get("error_code")
            except (ValueError, AttributeError):
                message, code = body, None
            error = NotRegisteredError if _missing(code, message) else RegistryReadError
            raise error(f"{message[:300]} (HTTP {exc.code} from {self.base})") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryReadError(f"{self.base} is unreachable ({type(exc).__name__}: {reason})") from exc

    def alias_version(self, name: str, alias: str) -> str:
        return self.aliased(name, alias).version

    def aliased(self, name: str, alias: str) -> AliasedVersion:
        return self._found(self._get("registered-models/alias", name=name, alias=alias)["model_version"])

    def version(self, name: str, version: str) -> AliasedVersion:
        return self._found(self._get("model-versions/get", name=name, version=version)["model_version"])

    @staticmethod
    def _found(found: dict[str, Any]) -> AliasedVersion:
        tags = {str(t["key"]): str(t.get("value", "")) for t in found.get("tags", [])}
        return AliasedVersion(str(found["version"]), str(found.get("run_id", "")), tags)

    def model_location(self, model_id: str) -> str:
        return str(
            self._get(f"logged-models/{urllib.parse.quote(model_id)}")["model"]["info"]["artifact_uri"]
        )

    def run_artifact_uri(self, run_id: str) -> str:
        return str(self._get("runs/get", run_id=run_id)["run"]["info"]["artifact_uri"])

    def with_alias(self, alias: str) -> list[str]:
        names: list[str] = []
        params = {"max_results": "1000"}
        while True:
            page = self._get("registered-models/search", **params)
            for found in page.get("registered_models", []):
                if any(a.get("alias") == alias for a in found.get("aliases", [])):
                    names.append(str(found["name"]))
            token = page.get("next_page_token")
            if not token:
                return sorted(names)
            params = {"max_results": "1000", "page_token": str(token)}

    def model_tags(self, name: str) -> dict[str, str]:
        found = self._get("registered-models/get", name=name)["registered_model"]
        return {str(t["key"]): str(t.get("value", "")) for t in found.get("tags", [])}


@dataclass(frozen=True)
class MlflowReader:
    """The MLflow client, for every other store (PostgreSQL, MySQL, Databricks, a file store)."""

    tracking_uri: str

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _call(self, method: str, *args: str) -> Any:
        try:
            return getattr(self._client(), method)(*args)
        except Exception as exc:  # MlflowException, or the store unreachable
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            missing = _missing(getattr(exc, "error_code", None), message)
            raise (NotRegisteredError if missing else RegistryReadError)(message) from exc

    def alias_version(self, name: str, alias: str) -> str:
        return str(self._call("get_model_version_by_alias", name, alias).version)

    def aliased(self, name: str, alias: str) -> AliasedVersion:
        found = self._call("get_model_version_by_alias", name, alias)
        return AliasedVersion(str(found.version), str(found.run_id), dict(found.tags))

    def version(self, name: str, version: str) -> AliasedVersion:
        found = self._call("get_model_version", name, version)
        return AliasedVersion(str(found.version), str(found.run_id), dict(found.tags))

    def model_location(self, model_id: str) -> str:
        return str(self._call("get_logged_model", model_id).artifact_location)

    def run_artifact_uri(self, run_id: str) -> str:
        return str(self._call("get_run", run_id).info.artifact_uri)

    def with_alias(self, alias: str) -> list[str]:
        from mlflow.store.entities.paged_list import PagedList

        names: list[str] = []
        token: str | None = None
        while True:
            try:
                page: PagedList[Any] = self._client().search_registered_models(page_token=token)
            except Exception as exc:  # MlflowException, or the store unreachable
                message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                raise RegistryReadError(message) from exc
            names.extend(str(m.name) for m in page if alias in (m.aliases or {}))
            token = page.token
            if not token:
                return sorted(names)

    def model_tags(self, name: str) -> dict[str, str]:
        return dict(self._call("get_registered_model", name).tags)


def direct_reader(tracking_uri: str) -> Reader | None:
    """The MLflow-free reader for this store, or None where only the MLflow client can read it."""
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
        return SqliteReader(Path(urllib.parse.unquote(path)))
    if tracking_uri.startswith(("http://", "https://")):
        return RestReader.from_uri(tracking_uri)
    return None


@dataclass(frozen=True)
class WithFallback:
    """The direct reader, and the MLflow client where the direct one meets a schema it does not know."""

    direct: Reader
    fallback: Reader

    def _read(self, call: Callable[[Reader], T]) -> T:
        try:
            return call(self.direct)
        except SchemaUnknownError:
            return call(self.fallback)

    def alias_version(self, name: str, alias: str) -> str:
        return self._read(lambda r: r.alias_version(name, alias))

    def aliased(self, name: str, alias: str) -> AliasedVersion:
        return self._read(lambda r: r.aliased(name, alias))

    def version(self, name: str, version: str) -> AliasedVersion:
        return self._read(lambda r: r.version(name, version))

    def model_location(self, model_id: str) -> str:
        return self._read(lambda r: r.model_location(model_id))

    def run_artifact_uri(self, run_id: str) -> str:
        return self._read(lambda r: r.run_artifact_uri(run_id))

    def with_alias(self, alias: str) -> list[str]:
        return self._read(lambda r: r.with_alias(alias))

    def model_tags(self, name: str) -> dict[str, str]:
        return self._read(lambda r: r.model_tags(name))


def reader(tracking_uri: str) -> Reader:
    """How this process reads the store at ``tracking_uri``: directly where it can, else with MLflow."""
    direct = direct_reader(tracking_uri)
    fallback = MlflowReader(tracking_uri)
    return fallback if direct is None else WithFallback(direct, fallback)


def local_path(artifact_uri: str) -> Path | None:
    """The local file or folder an artifact URI names, or None for a remote store."""
    parts = urllib.parse.urlsplit(artifact_uri)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(urllib.parse.unquote(parts.path))
    if parts.scheme == "" and artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None


def download(artifact_uri: str, target: Path) -> None:
    """Put the artifact (file or folder) at ``artifact_uri`` into the folder ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    source = local_path(artifact_uri)
    if source is None:
        import mlflow.artifacts

        mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(target))
    elif source.is_dir():
        shutil.copytree(source, target / source.name, dirs_exist_ok=True)
    elif source.is_file():
        shutil.copy2(source, target / source.name)
    else:
        raise RegistryReadError(f"no artifact at {artifact_uri}")
