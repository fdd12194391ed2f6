"""The ``trace`` deployment: ``mlops trace`` as a flow run, its report a Prefect artifact."""

from __future__ import annotations

import re

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import trace
from flows.gateway import gateway
from flows.runs import artifact_key
from models.settings import Settings


@flow(name="trace")
def trace_flow(request_id: str) -> dict[str, object]:
    """Everything behind one answer (``flows/trace.py``), as a Markdown artifact and as the run's result."""
    settings = Settings()
    found = trace.collect(settings, request_id, gateway(settings).client)
    create_markdown_artifact(
        "```\n" + "\n".join(trace.lines(found)) + "\n```",
        key=artifact_key("trace", re.sub(r"[^a-z0-9-]", "-", request_id.lower())),
        description=f"trace of request {request_id}"[:1000],
    )
    return dict(found.__dict__)
