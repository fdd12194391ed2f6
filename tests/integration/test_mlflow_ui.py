"""The version page of the MLflow UI shows a reviewer the gate's verdict and the promotion decision.

A real ``mlflow server`` on a free loopback port, a version trained by the pipeline and promoted by a
person through the ``promote`` flow, and the UI's version page rendered in headless Chromium (Debian's
package, as ``tests/integration/test_stack.py`` drives the Prefect UI). The screenshot is kept in the test's
folder, and copied to ``benchmarks/results/mlflow-version-page.png`` when ``MLOPS_SAVE_SCREENSHOT=1``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from flows.processes import free_port, supervised, wait_http
from flows.release import promote_flow
from flows.stack import MLFLOW_SERVER_ENV
from flows.tracking import PROJECT_ROOT, connect
from flows.training import training_pipeline
from models.registry import Tag
from tests.conftest import make_settings
from tests.integration.conftest import use
from tests.integration.stack import CHROMIUM

pytestmark = pytest.mark.integration

SAVED = PROJECT_ROOT / "benchmarks" / "results" / "mlflow-version-page.png"


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """``mlflow server`` on SQLite with local artifacts, as the stack starts it; stopped on leaving."""
    port, log = free_port(), folder / "mlflow-server.log"
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root", (folder / "artifacts").as_uri(), "--no-serve-artifacts", "--workers", "1",
    ]  # fmt: skip
    with supervised(command, log, MLFLOW_SERVER_ENV) as process:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", 120, lambda: process.poll() is not None, "mlflow server",
                  "the test's limit (120 s)", log)  # fmt: skip
        yield url


def rendered_text(page: Page, url: str, *wait_for: str) -> str:
    """The page's text once each of ``wait_for`` is shown (the UI keeps polling: no network idle)."""
    page.goto(url)
    for text in wait_for:
        page.get_by_text(text).first.wait_for(timeout=60_000)
    assistant = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if assistant.count():  # the UI's chat panel: closed, so that the page gets the whole width
        assistant.first.click()
    return page.inner_text("body")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="make test installs Debian's chromium")
def test_the_version_page_shows_the_gate_verdict_and_the_promotion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: None
) -> None:
    with mlflow_server(tmp_path / "mlflow") as url:
        artifacts = (tmp_path / "mlflow" / "artifacts").as_uri()
        settings = use(
            make_settings(tmp_path / "state", tracking_uri=url, artifact_uri=artifacts), monkeypatch
        )
        assert training_pipeline(promotion="none", deploy_target="none").verdict == "challenger"
        reason = "gate table and parity reviewed"
        promote_flow(version="1", requested_by="ana", reason=reason, deploy_target="none")
        version = connect(settings).get_model_version(settings.model_name, "1")
        run_id, experiment = (
            str(version.run_id),
            connect(settings).get_run(str(version.run_id)).info.experiment_id,
        )

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1300})
                text = rendered_text(
                    page, f"{url}/#/models/{settings.model_name}/versions/1", "Gate: passed", Tag.PROMOTION_BY
                )
                (tmp_path / "mlflow-version-page.html").write_text(page.content())
                page.screenshot(path=tmp_path / "mlflow-version-page.png", full_page=True)
                card = rendered_text(
                    page,
                    f"{url}/#/experiments/{experiment}/runs/{run_id}/artifacts/model_card.md",
                    "Technical documentation:",
                )
                page.screenshot(path=tmp_path / "mlflow-model-card.png", full_page=True)
            finally:
                browser.close()

    # the description: the gate's verdict, who promoted it, when and why, and a link to the document
    assert "Gate: passed" in text and "passed; failed: none" in text
    assert f"Promotion: approved by ana at {version.tags[Tag.PROMOTION_AT]}: {reason}" in text
    assert "Technical documentation (Annex IV)" in text and "model_card.md" in text
    # the tags beside it: every gate check and the promotion's record
    for key in (Tag.GATE_VERDICT, Tag.gate_check("onnx.parity"), Tag.PROMOTION_BY, Tag.PROMOTION_REASON):
        assert key in text, key
    assert reason in text and "champion" in text
    # the document itself, as the run's artifact page shows it
    assert f"Technical documentation: {settings.model_name} v1" in card
    assert "decision: approved by ana: gate table and parity reviewed" in card  # a Markdown list, rendered
    if os.environ.get("MLOPS_SAVE_SCREENSHOT") == "1":
        SAVED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "mlflow-version-page.png", SAVED)
        shutil.copyfile(tmp_path / "mlflow-model-card.png", SAVED.with_name("mlflow-model-card.png"))
