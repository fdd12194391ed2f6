"""The monitor flow on generated traffic: clean windows stay quiet, injected drift is named, labels give
live metrics, and a breach starts a training run under a real Prefect server."""

import asyncio
import time
import uuid
from pathlib import Path
from uuid import UUID

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from sklearn import metrics as skmetrics

from flows.gate import GateConfig
from flows.monitor import MonitorThresholds
from flows.monitoring import monitor_flow
from flows.tracking import connect
from flows.traffic import plan_traffic
from flows.training import training_pipeline
from models import datasets
from models.registry import Tag
from models.settings import Settings
from serving.inference_log import InferenceLog
from serving.model import load_alias


def serve(
    settings: Settings,
    planned: pd.DataFrame,
    spec: datasets.DatasetSpec,
    batch: int = 5,
    probe: bool = False,
) -> pd.DataFrame:
    """What the service does per request (load the champion, predict, log), without the HTTP hop."""
    model = load_alias(settings.resolved_tracking_uri, settings.model_name, settings.model_cache_dir)
    log = InferenceLog(settings.inference_log_dir, worker="test")
    truth = []
    for start in range(0, len(planned), batch):
        chunk = planned.iloc[start : start + batch]
        feeds = model.feeds(datasets.records(chunk, spec))
        outputs = model.run(feeds)
        request_id = uuid.uuid4().hex
        log.write(
            request_id=request_id,
            model=model.ref.name,
            version=model.ref.version,
            run_id=model.ref.run_id,
            route="predict",
            latency_ms=0.4,
            inputs=feeds,
            outputs=dict(zip(model.output_names, outputs, strict=True)),
            rows=len(chunk),
            probe=probe,
        )
        truth += [(request_id, i, label) for i, label in enumerate(chunk[spec.target])]
    log.close()
    return pd.DataFrame(truth, columns=["request_id", "row", "label"])


@pytest.fixture
def holdout(flow_settings: Settings) -> pd.DataFrame:
    assert training_pipeline(deploy_target="none").verdict == "champion"
    frame = datasets.load_frame("demo:breast_cancer")
    return datasets.split(frame, datasets.BREAST_CANCER).holdout


def test_clean_traffic_raises_nothing_and_live_metrics_match(
    flow_settings: Settings, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    spec = datasets.BREAST_CANCER
    planned = plan_traffic(holdout, spec, rows=600, shifts=[], balance=None)
    labels = serve(flow_settings, planned, spec)
    # the deploy checks' probes repeat a few golden rows: drift, were they counted as consumers' traffic
    serve(flow_settings, pd.concat([planned.head(2)] * 150), spec, probe=True)
    labels_path = tmp_path / "labels.csv"
    labels.to_csv(labels_path, index=False)
    result = monitor_flow(labels_path=str(labels_path))
    assert result["breaches"] == [] and result["rows"] == 600
    client = connect(flow_settings)
    monitor_run = client.get_run(result["monitor_run"])
    accuracy = monitor_run.data.metrics["live.accuracy"]
    model = load_alias(flow_settings.resolved_tracking_uri, flow_settings.model_name, tmp_path / "cache")
    predicted = [p["label"] for p in model.predict(datasets.records(planned, spec))]
    assert accuracy == pytest.approx(skmetrics.accuracy_score(planned[spec.target], predicted))
    tags = client.get_model_version(flow_settings.model_name, "1").tags
    assert tags[Tag.MONITOR_LAST].startswith("ok: run ")
    artifacts = {a.path for a in client.list_artifacts(result["monitor_run"])}
    assert {"report.md", "report.html"} <= artifacts


def test_a_shifted_feature_is_named(flow_settings: Settings, holdout: pd.DataFrame) -> None:
    spec = datasets.BREAST_CANCER
    serve(
        flow_settings, plan_traffic(holdout, spec, rows=600, shifts=["mean_texture:+2sd"], balance=None), spec
    )
    result = monitor_flow()
    drifted = [b for b in result["breaches"] if b.startswith("drift ")]
    assert [b.split(":")[0] for b in drifted] == ["drift mean_texture"], result["breaches"]


def test_a_changed_label_balance_shows_as_prediction_drift(
    flow_settings: Settings, holdout: pd.DataFrame
) -> None:
    spec = datasets.BREAST_CANCER
    serve(flow_settings, plan_traffic(holdout, spec, rows=600, shifts=[], balance="label:0=0.9"), spec)
    result = monitor_flow(thresholds=MonitorThresholds(psi=10))  # judge the predictions, not the features
    assert any(b.startswith("prediction drift") for b in result["breaches"]), result["breaches"]


def test_a_breach_starts_a_training_run(flow_settings: Settings, holdout: pd.DataFrame) -> None:
    deployment = training_pipeline.to_deployment(name="training-pipeline")
    deployment.apply()  # type: ignore[union-attr]  # sync call outside an event loop
    spec = datasets.BREAST_CANCER
    serve(flow_settings, plan_traffic(holdout, spec, rows=400, shifts=["worst_area:*3"], balance=None), spec)
    result = monitor_flow(retrain=True)
    assert result["breaches"] and result["triggered_flow_run"]

    async def read(run_id: str):
        async with get_client() as client:
            return await client.read_flow_run(UUID(run_id))

    triggered = asyncio.run(read(result["triggered_flow_run"]))
    assert "caused-by-monitor" in triggered.tags
    assert any(tag.startswith("monitor-run:") for tag in triggered.tags)
    assert triggered.deployment_id is not None
    run = connect(flow_settings).get_run(result["monitor_run"])
    assert run.data.tags["triggered_flow_run"] == result["triggered_flow_run"]


def test_new_category_on_mixed_data(flow_settings: Settings) -> None:
    spec = datasets.CHURN
    assert (
        training_pipeline(
            data_source="demo:churn",
            dataset="churn",
            recipe="logistic_regression",
            gate_config=GateConfig(metric_floors={"roc_auc": 0.6}, max_regression={}, latency_p99_ms=100),
            deploy_target="none",
        ).verdict
        == "champion"
    )
    holdout = datasets.split(datasets.load_frame("demo:churn"), spec).holdout
    serve(flow_settings, plan_traffic(holdout, spec, rows=600, shifts=["plan:=platinum"], balance=None), spec)
    started = time.time()
    result = monitor_flow(until=started + 1)
    drifted = [b.split(":")[0] for b in result["breaches"] if b.startswith("drift ")]
    assert drifted == ["drift plan"], result["breaches"]
