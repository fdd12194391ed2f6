"""The local stack as a person uses it: one command, the UIs, deployments run from the UI, Ctrl-C.

``make stack`` exactly as the README says, in a fresh clone of the committed tree and the machine's own
environment (tests/integration/newcomer.py): its first start installs, trains and serves; its second
reuses the state. Real processes throughout: ``mlops stack`` starts ``prefect server``, ``mlflow server``,
a Prefect worker and ``bentoml serve``; runs are created through the REST API the Prefect UI calls, and the
UI itself is driven in headless Chromium (Debian's package, installed by ``make test``).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from flows.deploy import served_version
from flows.stack import DEMO_MODELS
from flows.tracking import alias_version, connect
from models.registry import CHAMPION
from models.settings import Settings
from tests.integration.newcomer import listening_ports, processes_in
from tests.integration.stack import CHROMIUM, RELAXED_CHECKS, RunningStack, running_stack

pytestmark = pytest.mark.integration

SCREENSHOTS = Path(os.environ.get("MLOPS_SCREENSHOTS", "test-artifacts/screenshots"))


def champion(settings: Settings) -> str | None:
    return alias_version(connect(settings.model_copy(update={"tracking_uri": settings.mlflow_url})),
                         settings.model_name, CHAMPION)  # fmt: skip


def stop_with_ctrl_c(stack: RunningStack, folder: Path) -> None:
    """Ctrl-C in the terminal: the stack stops every process it started and nothing stays listening."""
    stack.command.ctrl_c()
    text = stack.text()
    assert "» stopped" in text and "Traceback" not in text, text[-6000:]
    assert processes_in(folder) == []
    ports = {stack.settings.serve_port, stack.settings.prefect_port, stack.settings.mlflow_port}
    assert ports == {3000, 4200, 5000}  # the README's addresses
    assert listening_ports() & ports == set()  # other tests' servers may run meanwhile


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="make test installs Debian's chromium")
def test_the_stack_from_first_start_to_promotion_in_the_ui(newcomer_clone: Path, tmp_path: Path) -> None:
    assert not (newcomer_clone / ".mlops").exists()
    with running_stack(newcomer_clone, tmp_path / "first.log") as stack:
        stack_settings = stack.settings
        text = stack.text()
        assert "first model: a run of training-pipeline/training-pipeline" in text
        assert "stage=gate version=1 verdict=passed" in text  # the flow's stage lines, as progress
        for url in (stack.ui, stack_settings.mlflow_url, stack_settings.serve_url):
            assert url in text
        assert stack.served() == "1"
        # the three demo datasets' models, each its own registered model, from the one service
        assert "the other demo models, served by the same service" in text
        models = {stack_settings.model_name, *(m.model_name for m in DEMO_MODELS)}
        assert stack.served_models() == models
        for model in DEMO_MODELS:
            assert served_version(stack_settings.serve_url, model.model_name) == "1"
        assert httpx.get(f"{stack_settings.mlflow_url}/health", timeout=5).status_code == 200
        # MLflow's GenAI job runner and its Huey consumers stay off (2 GiB and two cores' worth at start)
        assert [p for p in processes_in(newcomer_clone) if "huey" in p or "_job_runner" in p] == []
        stop_with_ctrl_c(stack, newcomer_clone)

    with running_stack(newcomer_clone, tmp_path / "second.log") as stack:
        assert "serving the champion (state from an earlier start)" in stack.text()
        assert "first model" not in stack.text()
        assert "served by the same service (none missing)" in stack.text()
        assert stack.served() == "1" and stack.served_models() == models
        assert champion(stack_settings) == "1"
        # the server's scheduler has put the nightly runs of the cron deployment on the calendar
        scheduled = stack.scheduled_runs("training-pipeline")
        assert scheduled and all(start.endswith("T03:00:00Z") for start in scheduled), scheduled
        # a second version, registered but not promoted
        run = stack.wait_run(stack.create_run("training-pipeline", {"promotion": "none"}))
        assert stack.state(run) == "COMPLETED", run.state

        # promote v2 the way the UI's Run button does; the service follows the alias
        promote = {"version": "2", "requested_by": "ui-test", "reason": "promote from the UI"}
        run = stack.wait_run(stack.create_run("promote", {**promote, "deploy_checks": RELAXED_CHECKS}))
        assert stack.state(run) == "COMPLETED", run.state
        assert champion(stack_settings) == "2"
        stack.wait_served("2")

        rollback = {"requested_by": "ui-test", "reason": "roll back from the UI"}
        run = stack.wait_run(stack.create_run("rollback", {**rollback, "deploy_checks": RELAXED_CHECKS}))
        assert stack.state(run) == "COMPLETED", run.state
        assert champion(stack_settings) == "1"
        stack.wait_served("1")

        # a reviewed run pauses with its form; a person approves it in the browser
        reviewed = stack.create_run(
            "training-pipeline-reviewed",
            {"recipe": "logistic_regression", "deploy_checks": RELAXED_CHECKS},
        )
        stack.wait_run(reviewed, until={"PAUSED"})
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            page.goto(f"{stack.ui}/deployments/deployment/{stack.deployment_id('promote')}?tab=Parameters")
            page.get_by_text("requested_by", exact=True).first.wait_for(timeout=60_000)
            # the deployment's name and its work pool (the UI renders the pool a moment after the form)
            page.get_by_text("promote", exact=True).first.wait_for(state="visible", timeout=30_000)
            page.get_by_text("mlops-process", exact=True).first.wait_for(state="visible", timeout=30_000)
            shoot(page, "prefect-deployment-promote")

            page.goto(f"{stack.ui}/runs/flow-run/{reviewed}")
            page.get_by_role("button", name="Resume").first.click(timeout=60_000)
            page.get_by_text("Promote breast-cancer-classifier v3 to champion?").wait_for(timeout=30_000)
            shoot(page, "prefect-approval-form")
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("switch").first.click()
            dialog.locator("textarea").nth(0).fill("ui-reviewer")
            dialog.locator("textarea").nth(1).fill("approved in the browser")
            dialog.get_by_role("button", name="Submit").click()
            dialog.wait_for(state="hidden", timeout=30_000)  # the resume request has been answered
            browser.close()

        run = stack.wait_run(reviewed)
        assert stack.state(run) == "COMPLETED", run.state
        assert champion(stack_settings) == "3"
        stack.wait_served("3")
        client = connect(stack_settings.model_copy(update={"tracking_uri": stack_settings.mlflow_url}))
        tags = client.get_model_version(stack_settings.model_name, "3").tags
        assert tags["promotion.by"] == "ui-reviewer", tags
        stop_with_ctrl_c(stack, newcomer_clone)
