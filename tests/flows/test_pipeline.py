"""The pipeline flow end to end under a real (temporary) Prefect server and a throwaway MLflow store."""

import asyncio
from pathlib import Path

import pandas as pd
from prefect.client.orchestration import get_client

from flows.gate import GateConfig
from flows.tracking import alias_version, connect
from flows.training import training_pipeline
from flows.validate import DataValidationError
from models.registry import CHALLENGER, CHAMPION, Tag
from models.settings import Settings


def artifact_keys() -> set[str | None]:
    async def read() -> set[str | None]:
        async with get_client() as prefect:
            return {a.key for a in await prefect.read_artifacts()}

    return asyncio.run(read())


def test_pipeline_trains_registers_converts_gates_and_promotes(flow_settings: Settings) -> None:
    result = training_pipeline(deploy_target="none")
    assert (result.verdict, result.version, result.champion) == ("champion", "1", "1")
    client = connect(flow_settings)
    assert alias_version(client, flow_settings.model_name, CHAMPION) == "1"
    assert alias_version(client, flow_settings.model_name, CHALLENGER) == "1"
    tags = client.get_model_version(flow_settings.model_name, "1").tags
    assert tags[Tag.DATA_SOURCE] == "demo:breast_cancer"
    assert len(tags[Tag.DATA_DIGEST]) == 16
    assert tags[Tag.DATA_VALIDATION].endswith("expectations passed")
    assert tags[Tag.ONNX_PARITY] == "passed"
    assert tags[Tag.PROMOTION_BY] == "pipeline (auto)"
    assert {"gate-breast-cancer-classifier", "data-validation-breast-cancer"} <= artifact_keys()


def test_bad_data_stops_the_flow_before_anything_is_trained(
    flow_settings: Settings, tmp_path: Path, breast_cancer: pd.DataFrame
) -> None:
    bad = breast_cancer.copy()
    bad.loc[:9, "mean_radius"] = None
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    state = training_pipeline(data_source=str(path), deploy_target="none", return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DataValidationError)
    assert "expect_column_values_to_not_be_null | mean_radius" in str(error)
    client = connect(flow_settings)
    assert client.search_registered_models() == []
    experiment = client.get_experiment_by_name(flow_settings.experiment_name)
    assert experiment is not None
    assert client.search_runs([experiment.experiment_id]) == []


def test_a_model_below_the_floor_is_rejected_and_the_champion_stays(flow_settings: Settings) -> None:
    assert training_pipeline(deploy_target="none").verdict == "champion"
    result = training_pipeline(recipe="weak_logistic_regression", deploy_target="none")
    assert result.verdict == "rejected"
    assert any(reason.startswith("metric.accuracy") for reason in result.reasons)
    client = connect(flow_settings)
    assert alias_version(client, flow_settings.model_name, CHAMPION) == "1"
    assert client.get_model_version(flow_settings.model_name, "2").tags[Tag.GATE_VERDICT] == "rejected"


def test_a_rejected_run_ends_completed_in_a_named_state(flow_settings: Settings) -> None:
    state = training_pipeline(recipe="weak_logistic_regression", deploy_target="none", return_state=True)
    assert state.is_completed() and state.name == "Rejected"
    assert state.message is not None and "metric.accuracy" in state.message
    tags = connect(flow_settings).get_model_version(flow_settings.model_name, "1").tags
    assert tags[Tag.GATE_VERDICT] == "rejected"
    assert Tag.MODEL_CARD in tags


def test_mixed_type_classification_through_the_pipeline(flow_settings: Settings) -> None:
    result = training_pipeline(
        data_source="demo:churn",
        dataset="churn",
        recipe="hist_gradient_boosting",
        gate_config=GateConfig(
            metric_floors={"roc_auc": 0.7}, max_regression={"roc_auc": 0.01}, latency_p99_ms=100
        ),
        deploy_target="none",
    )
    assert result.verdict == "champion", result.reasons
    tags = connect(flow_settings).get_model_version(flow_settings.model_name, "1").tags
    assert tags[Tag.ONNX_PARITY] == "passed"
    assert tags[Tag.gate_check("onnx.parity")].startswith("pass: labels identical")


def test_regression_through_the_pipeline_with_its_own_metrics(flow_settings: Settings) -> None:
    config = GateConfig(
        metric_floors={"r2": 0.9},
        metric_ceilings={"rmse": 60},
        max_regression={"rmse": 1.0},
        latency_p99_ms=100,
    )
    first = training_pipeline(
        data_source="demo:housing",
        dataset="housing",
        recipe="ridge",
        gate_config=config,
        deploy_target="none",
    )
    assert first.verdict == "champion", first.reasons
    better = training_pipeline(
        data_source="demo:housing",
        dataset="housing",
        recipe="hist_gradient_boosting_regressor",
        gate_config=config,
        deploy_target="none",
    )
    assert better.verdict == "champion", better.reasons
    tags = connect(flow_settings).get_model_version(flow_settings.model_name, "2").tags
    assert "vs v1" in tags[Tag.gate_check("champion.rmse")]


def test_parameters_that_cannot_work_are_refused_at_the_start(flow_settings: Settings) -> None:
    state = training_pipeline(
        dataset="housing",
        data_source="demo:housing",
        recipe="ridge",
        gate_config=GateConfig(metric_floors={"roc_auc": 0.9}),
        deploy_target="none",
        return_state=True,
    )
    assert state.is_failed()
    assert "metric 'roc_auc' is not computed for regression" in str(state.result(raise_on_failure=False))
    state = training_pipeline(recipe="ridge", deploy_target="none", return_state=True)
    assert "recipe 'ridge' is for regression" in str(state.result(raise_on_failure=False))
    assert connect(flow_settings).search_registered_models() == []
