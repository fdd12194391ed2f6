"""Past one machine by settings alone: the stack with MLflow and Prefect on PostgreSQL (127.0.0.1:5432).

Both servers get a database of their own, created for the test and dropped after it; the pipeline runs
through the worker against both, and the rows it leaves are read back from PostgreSQL itself. The
Kubernetes work pool's base job template is checked by the same Prefect server, which refuses a template
whose placeholders its variables do not define.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
import yaml

from flows.processes import free_port
from flows.stack import DEMO_MODELS
from flows.tracking import PROJECT_ROOT
from models.settings import Settings
from tests.integration.stack import running_stack

pytestmark = pytest.mark.integration

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def admin(sql: str) -> None:
    connection = psycopg2.connect(f"{POSTGRES}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql)
    connection.close()


def query(database: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg2.connect(f"{POSTGRES}/{database}") as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    try:
        admin("SELECT 1")
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}")
    suffix = uuid.uuid4().hex[:8]
    names = (f"mlops_mlflow_{suffix}", f"mlops_prefect_{suffix}")
    for name in names:
        admin(f"CREATE DATABASE {name}")
    try:
        yield names
    finally:
        for name in names:
            admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_pipeline_runs_against_mlflow_and_prefect_on_postgresql(
    databases: tuple[str, str], newcomer_clone: Path, tmp_path: Path
) -> None:
    mlflow_db, prefect_db = databases
    settings = Settings(
        state_dir=tmp_path / "state",
        serve_port=free_port(),
        prefect_port=free_port(),
        mlflow_port=free_port(),
        mlflow_backend_store_uri=f"{POSTGRES}/{mlflow_db}",
        prefect_database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{prefect_db}",
    )
    with running_stack(newcomer_clone, tmp_path / "stack.log", settings) as stack:
        assert stack.served() == "1"
        assert "first model" in stack.text()

        # the first model and the other demo datasets' models, each its own registered model at version 1
        models = {settings.model_name, *(m.model_name for m in DEMO_MODELS)}
        assert stack.served_models() == models
        versions = query(mlflow_db, "SELECT name, version, run_id FROM model_versions")
        assert sorted((name, version) for name, version, _ in versions) == [(m, 1) for m in sorted(models)]
        aliases = query(mlflow_db, "SELECT name, alias, version FROM registered_model_aliases")
        assert {(m, "champion", 1) for m in models} <= set(aliases)
        runs = query(
            prefect_db,
            "SELECT d.name, r.state_type FROM flow_run r JOIN deployment d ON d.id = r.deployment_id",
        )
        assert ("training-pipeline", "COMPLETED") in runs
        assert not (settings.state_path / "mlflow.db").exists()
        assert not (settings.state_path / "prefect" / "prefect.db").exists()

        # the Kubernetes work pool's template, as the server validates it
        template = json.loads((PROJECT_ROOT / "deploy/prefect/kubernetes-work-pool.json").read_text())
        pool = {"name": "mlops-kubernetes", "type": "kubernetes", "base_job_template": template}
        created = httpx.post(f"{stack.api}/work_pools/", json=pool, timeout=10)
        assert created.status_code == 201, created.text
        broken = {**template["variables"], "properties": dict(template["variables"]["properties"])}
        del broken["properties"]["image"]
        refused = httpx.post(
            f"{stack.api}/work_pools/",
            json={**pool, "name": "broken", "base_job_template": {**template, "variables": broken}},
            timeout=10,
        )
        assert refused.status_code == 422 and "image" in refused.text


def test_kubernetes_worker_manifest_and_flows_image_match_the_work_pool() -> None:
    template = json.loads((PROJECT_ROOT / "deploy/prefect/kubernetes-work-pool.json").read_text())
    documents = yaml.safe_load_all((PROJECT_ROOT / "deploy/kubernetes/prefect-worker.yaml").read_text())
    manifests = {d["kind"]: d for d in documents if d}
    assert set(manifests) == {"ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment"}
    (worker,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert worker["args"][worker["args"].index("--pool") + 1] == "mlops-kubernetes"
    assert worker["args"][worker["args"].index("--type") + 1] == "kubernetes"
    assert "3.8.8" in worker["image"]  # the same Prefect as the lockfile
    variables = template["variables"]["properties"]
    assert variables["service_account_name"]["default"] == manifests["ServiceAccount"]["metadata"]["name"]
    assert variables["namespace"]["default"] == manifests["ServiceAccount"]["metadata"]["namespace"]
    job = template["job_configuration"]["job_manifest"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"][0]["configMapRef"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
    rules = {resource for rule in manifests["Role"]["rules"] for resource in rule["resources"]}
    assert {"jobs", "pods", "pods/log"} <= rules

    config = manifests["ConfigMap"]["data"]
    fields = {f"MLOPS_{name.upper()}" for name in Settings.model_fields}
    assert {key for key in config if key.startswith("MLOPS_")} <= fields
    assert config["PREFECT_API_URL"].endswith("/api")

    dockerfile = (PROJECT_ROOT / "deploy/flows.Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in dockerfile
    for folder in ("models", "flows", "serving"):
        assert f"COPY {folder} ./{folder}" in dockerfile
