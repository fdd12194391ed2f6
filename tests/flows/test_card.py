"""A version's technical documentation, generated from a real MLflow store by the flows that change it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect import flow

from flows import card, progressive, release, rollout
from flows.gate import Check, GateResult
from flows.gateway import gateway
from flows.promote import move_alias
from flows.release import promote_flow
from flows.tracking import alias_version, connect
from flows.training import training_pipeline
from models.registry import CHAMPION, MODEL_CARD_ARTIFACT, Tag
from models.settings import Settings

SECTIONS = [
    "## 1. Intended purpose",
    "## 2. Data and its validation",
    "## 3. Design choices",
    "## 4. Metrics and their limits",
    "## 5. Gate: ",
    "## 6. Human oversight: approval and promotion",
    "## 7. Releases, rollbacks and champion moves",
    "## 8. Post-market monitoring plan",
    "## 9. Lineage",
]


def document(client: MlflowClient, settings: Settings, version: str) -> str:
    tags = client.get_model_version(settings.model_name, version).tags
    assert tags[Tag.MODEL_CARD] == f"runs:/{tags[Tag.RUN_ID]}/{MODEL_CARD_ARTIFACT}"
    return Path(client.download_artifacts(tags[Tag.RUN_ID], MODEL_CARD_ARTIFACT)).read_text()


def described(client: MlflowClient, settings: Settings, version: str) -> str:
    return str(client.get_model_version(settings.model_name, version).description)


@flow
def record_release(settings: Settings, version: str, champion: str) -> str:
    """A canary release of ``version`` whose first window failed, recorded as the release flow records it."""
    failed = GateResult((Check("live.error_rate", "0.2000", "<= 0.0100", False),))
    window = progressive.Window("canary", 5.0, time.time() - 30, time.time(), failed, {"share": 5.0})
    run = progressive.Release(version, champion, "canary", [window])
    return progressive.record(settings, gateway(settings), run, "rolled_back", ["canary 5%: live.error_rate"])


def test_the_document_follows_the_version_through_training_promotion_release_and_rollback(
    flow_settings: Settings,
) -> None:
    client = connect(flow_settings)
    assert training_pipeline(deploy_target="none").verdict == "champion"
    first = document(client, flow_settings, "1")
    for section in SECTIONS:
        assert f"\n{section}" in first, section
    assert "after the training pipeline (promoted)" in first
    assert "## 5. Gate: passed" in first and "| onnx.parity | labels identical" in first
    assert "| champion.regression | no champion yet (first model) | no regression | pass |" in first
    assert "| training | breast_cancer-" in first and "| holdout | breast_cancer-" in first  # MLflow inputs
    assert "| expect_column_values_to_not_be_null | 31/31 | none |" in first  # the run's GE report
    assert "expectations passed" in first and "| model.C |" not in first and "| C | `1.0` |" in first
    assert "- decision: approved by pipeline (auto): passed the gate" in first
    assert "| psi | `0.2` |" in first and "`15 * * * *` UTC" in first  # prefect.yaml's monitor
    text = described(client, flow_settings, "1")
    assert "**Gate: passed** · **Promotion: approved by pipeline (auto)" in text
    assert "accuracy 0." in text and "artifacts/model_card.md)" in text

    # a rejected version, then forced to champion by a person: both documents say so
    assert training_pipeline(recipe="weak_logistic_regression", deploy_target="none").verdict == "rejected"
    rejected = document(client, flow_settings, "2")
    assert "## 5. Gate: rejected" in rejected and "- decision: none (not offered for promotion)" in rejected
    assert "| metric.accuracy |" in rejected and "| fail |" in rejected
    promote_flow(version="2", requested_by="cy", reason="a forced trial", force=True, deploy_target="none")
    forced = document(client, flow_settings, "2")
    assert "after its promotion by cy" in forced
    assert "- decision: approved by cy: a forced trial" in forced
    assert "- forced: yes, by cy (the version had not passed the gate)" in forced
    assert "- replaced champion: v1" in forced
    assert "(forced by cy)" in described(client, flow_settings, "2")
    assert "| superseded | champion moved to v2: approved by cy (a forced trial) | v2 |" in document(
        client, flow_settings, "1"
    )

    # its canary release fails: the release's record regenerates the document
    run_id = record_release(flow_settings, "2", "1")
    released = document(client, flow_settings, "2")
    assert "after its release (canary): rolled_back" in released
    assert "- last release: rolled_back; failed checks: canary 5%: live.error_rate" in released
    assert (
        "| release | release (canary) against v1, 1 window(s): rolled_back; failed: canary 5%: " in released
    )
    assert f"run {run_id}" in released
    assert "release: rolled_back" in described(client, flow_settings, "2")

    # rolled back to v1: the deployment record and both documents
    move_alias(client, flow_settings.model_name, CHAMPION, "1", "2")
    now = rollout.now()
    by = "rollback by bo: bad canary"
    entry = rollout.DeploymentRecord("rollback", flow_settings.model_name, "2", "1", by, now, now, True, [])
    rollout.record(client, flow_settings, entry)
    release.refresh_after_rollback(flow_settings, "2", "a rollback by bo")
    assert alias_version(client, flow_settings.model_name, CHAMPION) == "1"
    back = document(client, flow_settings, "1")
    assert "after a rollback by bo" in back and "- status: aliases challenger, champion;" in back
    assert "| rollback | rollback v2 -> v1 by rollback by bo: bad canary: passed |" in back
    away = document(client, flow_settings, "2")
    assert "| champion moved away | rollback v2 -> v1 by rollback by bo: bad canary: passed |" in away
    assert "- status: aliases none" in away
    archived = client.list_artifacts(client.get_model_version(flow_settings.model_name, "2").tags[Tag.RUN_ID],
                                     "model_card")  # fmt: skip
    assert len(archived) >= 4  # training, promotion, release, rollback: each a dated copy


def test_a_document_that_cannot_be_regenerated_is_a_warning(
    flow_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(flow_settings)
    with caplog.at_level(logging.WARNING, logger=card.__name__):
        card.refresh(client, flow_settings, "7", event="a rollback by bo")  # no such model or version
    assert "stage=card version=7 not regenerated after a rollback by bo" in caplog.text
