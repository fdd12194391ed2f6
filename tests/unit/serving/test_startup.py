"""The serving process starts light (no scikit-learn, Prefect, MLflow, pandas); not ready until a model is."""

import subprocess
import sys
from pathlib import Path

from flows.tracking import PROJECT_ROOT
from models import datasets
from tests.conftest import make_settings, settings_env, train_and_register


def test_not_ready_until_a_champion_is_loaded_and_never_imports_training_code(
    tmp_path: Path, split: datasets.Split
) -> None:
    settings = make_settings(tmp_path / "state")
    env = {**settings_env(settings), "PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    probe = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("startup_probe.py"))],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert probe.stdout is not None
    first = [probe.stdout.readline().split() for _ in range(3)]
    assert first == [["readyz", "503"], ["v2-ready", "503"], ["predict", "503"]]
    train_and_register(settings, split, "logistic_regression", promote_it=True)  # the champion appears
    rest, _ = probe.communicate(timeout=180)
    assert rest.split("\n")[:2] == ["readyz-later 200", "imported none"]
