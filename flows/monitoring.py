"""Monitoring: the monitor flow over a window of the inference log, and what it does on a breach.

The analysis itself (drift, errors, latency, live quality) is ``flows/monitor.py``; this module reads
the version's reference profile and gate metrics, publishes the report, and on a breach emits an event
and, when asked, starts the training deployment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import prefect.runtime.flow_run
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.events import emit_event

from flows import monitor
from flows.gateway import gateway
from flows.runs import artifact_key, log_stage
from models.registry import CHAMPION
from models.settings import Settings


@task(cache_policy=NONE)
def monitor_version(
    settings: Settings,
    version: str,
    since: float,
    until: float,
    labels_path: str | None,
    thresholds: monitor.MonitorThresholds,
) -> monitor.MonitorReport:
    registry = gateway(settings)
    report = monitor.monitor_window(
        settings.inference_log_dir,
        model=settings.model_name,
        version=version,
        profile=registry.profile(version),
        gate_metrics=registry.holdout_metrics(version),
        since=since,
        until=until,
        thresholds=thresholds,
        labels=Path(labels_path) if labels_path else None,
        feedback=settings.feedback_log_dir,
    )
    create_markdown_artifact(
        monitor.to_markdown(report),
        key=artifact_key("monitor", settings.model_name),
        description=f"{settings.model_name} v{version}: {'; '.join(report.breaches) or 'no breach'}"[:1000],
    )
    log_stage(
        "monitor",
        "version=%s rows=%d verdict=%s %s",
        version,
        report.rows,
        "breach" if report.breaches else "ok",
        report.breaches or "",
    )
    return report


@task(cache_policy=NONE)
def act_on_breach(
    settings: Settings, report: monitor.MonitorReport, retrain: bool, retrain_deployment: str
) -> str | None:
    """Emit a Prefect event for the breach and, when asked, start a run of the training deployment."""
    monitor_run = str(prefect.runtime.flow_run.id)
    emit_event(
        event="mlops.monitor.breach",
        resource={
            "prefect.resource.id": f"mlops.model.{settings.model_name}",
            "mlops.version": report.version,
        },
        payload={"breaches": report.breaches, "monitor_flow_run": monitor_run},
    )
    if not retrain:
        return None
    triggered = cast(
        FlowRun,
        run_deployment(
            retrain_deployment, timeout=0, tags=["caused-by-monitor", f"monitor-run:{monitor_run}"]
        ),
    )
    log_stage(
        "monitor", "version=%s breach -> started %s run %s", report.version, retrain_deployment, triggered.id
    )
    return str(triggered.id)


@flow(name="monitor")
def monitor_flow(
    version: str | None = None,
    window_minutes: float = 60,
    until: float | None = None,
    labels_path: str | None = None,
    thresholds: monitor.MonitorThresholds | None = None,
    retrain: bool = False,
    retrain_deployment: str = "training-pipeline/training-pipeline",
) -> dict[str, Any]:
    """Drift, volume, errors, latency and live quality of a version over a window of its inference log."""
    settings = Settings()
    registry = gateway(settings)
    chosen = version or registry.alias(CHAMPION)
    if chosen is None:
        raise ValueError(f"{settings.model_name} has no champion to monitor")
    end = until if until is not None else time.time()
    report = monitor_version(
        settings,
        chosen,
        end - window_minutes * 60,
        end,
        labels_path,
        thresholds or monitor.MonitorThresholds(),
    )
    triggered = act_on_breach(settings, report, retrain, retrain_deployment) if report.breaches else None
    run_id = monitor.record_report(registry.client, settings, report, triggered)
    return {
        "version": chosen,
        "rows": report.rows,
        "breaches": report.breaches,
        "monitor_run": run_id,
        "triggered_flow_run": triggered,
    }
