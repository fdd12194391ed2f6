"""register, convert, gate and promote against a real (throwaway) MLflow store."""

from pathlib import Path

import mlflow
import pytest

from flows.promote import Decision, PromotionRefusedError, promote
from flows.tracking import alias_version, connect
from models import datasets
from models.registry import CHALLENGER, CHAMPION, Tag
from tests.conftest import Registered, make_settings, train_and_register


def test_registered_version_carries_lineage_onnx_and_gate_tags(champion: Registered) -> None:
    settings = champion.settings
    client = connect(settings)
    version = client.get_model_version(settings.model_name, champion.version)
    tags = version.tags
    assert version.run_id == champion.run_id
    assert tags[Tag.ONNX_PARITY] == "passed"
    assert tags[Tag.GATE_VERDICT] == "passed"
    assert tags[Tag.gate_check("metric.roc_auc")].startswith("pass: ")
    assert tags[Tag.PROMOTION_BY] == "test"
    assert alias_version(client, settings.model_name, CHAMPION) == champion.version
    assert alias_version(client, settings.model_name, CHALLENGER) == champion.version
    # the ONNX model is logged to the training run, and the golden rows with it
    onnx_dir = mlflow.artifacts.download_artifacts(tags[Tag.ONNX_URI])
    assert (Path(onnx_dir) / "model.onnx").is_file()
    golden = mlflow.artifacts.load_dict(tags[Tag.GOLDEN_URI])
    assert len(golden["records"]) == len(golden["labels"]) == 8


def test_training_run_records_params_metrics_data_and_code(champion: Registered) -> None:
    run = connect(champion.settings).get_run(champion.run_id)
    assert run.inputs is not None
    assert run.data.params["recipe"] == "logistic_regression"
    assert run.data.metrics["holdout_roc_auc"] > 0.95
    assert run.data.tags["mlflow.source.git.commit"] == "test"
    assert {i.dataset.name.split("-")[0] for i in run.inputs.dataset_inputs} == {"breast_cancer"}
    contexts = {tag.value for i in run.inputs.dataset_inputs for tag in i.tags}
    assert contexts == {"training", "holdout"}


def test_rejected_version_stays_registered_and_cannot_be_promoted(
    tmp_path: Path, split: datasets.Split
) -> None:
    settings = make_settings(tmp_path / "state")
    weak = train_and_register(settings, split, "weak_logistic_regression", promote_it=False)
    client = connect(settings)
    tags = client.get_model_version(settings.model_name, weak.version).tags
    assert not weak.gate.passed
    assert tags[Tag.GATE_VERDICT] == "rejected"
    assert "metric.accuracy" in tags[Tag.GATE_REASONS]
    assert alias_version(client, settings.model_name, CHALLENGER) is None
    with pytest.raises(PromotionRefusedError, match="gate verdict 'rejected'"):
        promote(client, settings.model_name, weak.version, Decision(True, "someone", "why not"))
    assert alias_version(client, settings.model_name, CHAMPION) is None
