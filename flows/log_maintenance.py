"""Keeping the chained logs auditable: check them (``mlops verify-log``), and compact and expire them on a
schedule (``mlops maintain-log``, the ``log-maintenance`` deployment)."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from models.log_audit import log_dirs, maintain, verify_all
from models.settings import Settings


@flow(name="log-maintenance", log_prints=False)
def log_maintenance_flow() -> list[str]:
    """Compact and expire the inference and feedback logs; check what remains; an artifact of the result."""
    settings, logger, now = Settings(), get_run_logger(), time.time()
    done = [
        maintain(directory, compact_after_days=settings.log_compact_after_days,
                 retention_days=settings.log_retention_days, now=now).line()
        for directory in log_dirs(settings)
        if directory.is_dir()
    ]  # fmt: skip
    audits = verify_all(log_dirs(settings))
    lines = [*done, *(line for audit in audits for line in audit.lines())]
    for line in lines:
        logger.info(line)
    create_markdown_artifact(key="log-maintenance", markdown="```\n" + "\n".join(lines) + "\n```",
                             description="Log compaction, retention and chain check")  # fmt: skip
    if not all(audit.ok for audit in audits):
        broken = [found for audit in audits if (found := audit.first_problem()) is not None]
        raise RuntimeError("the log's chain is broken: " + "; ".join(f"{s}: {p.kind}" for s, p in broken))
    return lines
