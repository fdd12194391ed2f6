"""The serving container's configuration: `bentoml build` makes a Bento of the serving code only, and the
Kubernetes manifest runs several ready-probed replicas that follow the alias."""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.tracking import PROJECT_ROOT

MANIFEST = PROJECT_ROOT / "deploy" / "kubernetes" / "serving.yaml"


def test_serving_requirements_match_the_lockfile() -> None:
    lines = (PROJECT_ROOT / "serving" / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert {name: metadata.version(name) for name in pins} == pins
    assert not {"scikit-learn", "prefect", "skl2onnx"} & set(pins)


def test_bentoml_build_makes_a_bento_of_the_serving_code(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("bentoml")), "build", str(PROJECT_ROOT), "--output", "tag"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = tmp_path / "bentos" / name / version
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "serving.service:ModelService"
    assert {route["route"] for route in info["schema"]["routes"]} >= {"/predict_rows"}
    sources = {p.relative_to(bento / "src").as_posix() for p in (bento / "src").rglob("*.py")}
    assert "serving/service.py" in sources and "models/features.py" in sources
    assert not any(s.startswith(("flows/", "tests/")) for s in sources)
    assert "models/recipes.py" not in sources  # the training side stays out of the image
    assert (bento / "env" / "docker" / "Dockerfile").is_file()
    assert "onnxruntime==" in (bento / "env" / "python" / "requirements.txt").read_text()


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in documents}


def test_manifest_runs_several_ready_probed_replicas(manifests: dict[str, dict[str, Any]]) -> None:
    assert set(manifests) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    deployment = manifests["Deployment"]
    assert deployment["apiVersion"] == "apps/v1" and deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["ports"][0]["containerPort"] == 3000
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == manifests["Service"]["spec"]["selector"]
    assert manifests["PodDisruptionBudget"]["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_manifest_configures_the_service_by_settings_alone(manifests: dict[str, dict[str, Any]]) -> None:
    from models.settings import Settings

    config = manifests["ConfigMap"]["data"]
    fields = {f"MLOPS_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= fields
    assert {"MLOPS_TRACKING_URI", "MLOPS_MODEL_NAME"} <= set(config)
    settings = Settings(**{k.removeprefix("MLOPS_").lower(): v for k, v in config.items()})
    assert settings.resolved_tracking_uri.startswith("http://")
    assert settings.serve_workers == 2
