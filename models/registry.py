"""Registry conventions every part relies on: alias names and the tag keys on model versions."""

from __future__ import annotations

from typing import Final

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
CANARY: Final = "canary"  # answers a share of requests (ModelTag.CANARY_PERCENT), by routing key
SHADOW: Final = "shadow"  # gets a copy of a share of requests (ModelTag.SHADOW_PERCENT), never answers


class Tag:
    """Tag keys on a registered model version (and, where noted, on the training run)."""

    DATA_SOURCE: Final = "data.source"
    DATA_DIGEST: Final = "data.digest"
    DATA_ROWS: Final = "data.rows"
    DATA_VALIDATION: Final = "data.validation"
    RECIPE: Final = "train.recipe"
    RUN_ID: Final = "train.run_id"
    TRAINING_KEY: Final = "train.key"  # digest of data and recipe: what makes two trainings the same
    FLOW_RUN: Final = "pipeline.flow_run"  # the Prefect flow run that registered the version
    GIT_COMMIT: Final = "git.commit"
    ONNX_URI: Final = "onnx.model_uri"
    ONNX_PARITY: Final = "onnx.parity"
    ONNX_PARITY_MAX_DIFF: Final = "onnx.parity.max_abs_diff"
    GOLDEN_URI: Final = "golden.uri"
    GATE_VERDICT: Final = "gate.verdict"
    GATE_REASONS: Final = "gate.reasons"
    GATE_CHAMPION: Final = "gate.champion"  # the champion version the gate compared against ("none")
    PROMOTION_DECISION: Final = "promotion.decision"
    PROMOTION_BY: Final = "promotion.by"
    PROMOTION_AT: Final = "promotion.at"
    PROMOTION_REASON: Final = "promotion.reason"
    PROMOTION_FORCED_BY: Final = "promotion.forced_by"
    PROMOTION_PREVIOUS: Final = "promotion.previous"  # the champion this promotion replaced ("none")
    MODEL_CARD: Final = "model_card.uri"
    MONITOR_LAST: Final = "monitor.last"
    DEPLOYMENT_STATUS: Final = "deployment.status"
    DEPLOYMENT_REASON: Final = "deployment.reason"
    RELEASE_VERDICT: Final = "release.verdict"  # the last release's verdict: "promoted" or "rolled_back"
    RELEASE_FAILED: Final = "release.failed_checks"
    RELEASE_RUN: Final = "release.run_id"

    @staticmethod
    def gate_check(name: str) -> str:
        return f"gate.check.{name}"


class ModelTag:
    """Tag keys on the registered model itself: what every worker and replica of the model applies."""

    CANARY_PERCENT: Final = "traffic.canary_percent"  # 0-100, the share of requests the canary answers
    SHADOW_PERCENT: Final = "traffic.shadow_percent"  # 0-100, the share of requests copied to the shadow
    TRAFFIC_CHANGED: Final = "traffic.changed"  # when, by whom and why the split was last set


GOLDEN_ARTIFACT: Final = "golden/golden.json"
MODEL_CARD_ARTIFACT: Final = "model_card.md"
PROFILE_ARTIFACT: Final = "profile/reference.json"
VALIDATION_ARTIFACT: Final = "validation/report.json"  # the data validation's every expectation
ONNX_ARTIFACT_NAME: Final = "onnx"
SKLEARN_ARTIFACT_NAME: Final = "model"
