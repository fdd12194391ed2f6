"""What every flow family shares: stage log lines, artifact keys, and named end states."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect import get_run_logger
from prefect.states import Completed

T = TypeVar("T")


def artifact_key(*parts: str) -> str:
    return "-".join(parts).lower().replace("_", "-")


def log_stage(stage: str, message: str, *args: object) -> None:
    """One ``stage=<name> ...`` line in the flow run's log (``mlops stack`` echoes these as progress)."""
    get_run_logger().info(f"stage={stage} " + message, *args)


def ended(name: str, message: str, result: T) -> T:
    """End the flow run in a named Completed state (shown in the UI) that still returns ``result``.

    Prefect makes a state returned by a flow its final state and hands callers the state's data.
    """
    return cast(T, Completed(name=name, message=message, data=result))
