"""The gate on real trained models in a real (throwaway) registry: worse rejected, better accepted."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from flows import convert, evaluate, gate, promote
from flows.tracking import alias_version, connect
from flows.train import fit
from models import datasets
from models.metrics import evaluate as evaluate_metrics
from models.registry import CHAMPION, Tag
from tests.conftest import Registered, make_settings, train_and_register

NO_FLOORS = gate.GateConfig(metric_floors={}, latency_p99_ms=100)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, split: datasets.Split) -> Registered:
    """A registry holding one version (a logistic regression champion) for conversion side runs."""
    settings = make_settings(tmp_path_factory.mktemp("gate") / "state")
    return train_and_register(settings, split, "logistic_regression", promote_it=True)


def checks(result: gate.GateResult) -> dict[str, bool]:
    return {c.name: c.passed for c in result.checks}


def test_better_model_accepted_worse_model_rejected(tmp_path: Path, split: datasets.Split) -> None:
    registry = make_settings(tmp_path / "state")
    client = connect(registry)
    # a weak first model, admitted with no floors: nothing to regress from
    weak = train_and_register(registry, split, "weak_logistic_regression", promote_it=True, config=NO_FLOORS)
    assert weak.gate.passed
    assert weak.gate.checks[0].name == "champion.regression"
    assert weak.gate.checks[0].value == "no champion yet (first model)"

    # a better model: scored against the weak champion on the same rows, accepted
    better = train_and_register(registry, split, "logistic_regression", promote_it=True)
    assert better.gate.passed, better.gate.reasons
    roc = next(c for c in better.gate.checks if c.name == "champion.roc_auc")
    assert f"vs v{weak.version}" in roc.value and "(delta +" in roc.value
    assert alias_version(client, registry.model_name, CHAMPION) == better.version

    # the weak model again: now below the floors and worse than the champion, rejected
    worse = train_and_register(registry, split, "weak_logistic_regression", promote_it=False)
    assert not worse.gate.passed
    outcome = checks(worse.gate)
    assert not outcome["metric.accuracy"] and not outcome["champion.accuracy"]
    assert outcome["onnx.parity"] and outcome["onnx.latency_p99"]
    tags = client.get_model_version(registry.model_name, worse.version).tags
    assert tags[Tag.GATE_VERDICT] == "rejected"
    assert tags[Tag.gate_check("champion.accuracy")].startswith("fail: ")
    assert alias_version(client, registry.model_name, CHAMPION) == better.version


def test_config_driven_fail_paths_on_a_real_model(registry: Registered, split: datasets.Split) -> None:
    """Size, latency and parity measured on a real ONNX model, judged against impossible budgets."""
    settings = registry.settings
    client = connect(settings)
    pipeline = fit(split, "hist_gradient_boosting")
    conversion = convert.convert_version(
        client,
        pipeline,
        split,
        model_name=settings.model_name,
        version=registry.version,
        run_id=registry.run_id,
        tolerance=1e-5,
    )
    assert conversion.latency is not None and conversion.parity is not None
    metrics = evaluate_metrics(pipeline, split.x_holdout, split.y_holdout, "classification")
    champion = evaluate.score_champion(client, settings.model_name, split)
    strict = gate.GateConfig(max_model_bytes=100, latency_p99_ms=1e-6, parity_tolerance=1e-12)
    result = gate.evaluate_gate(metrics, conversion, conversion.latency, champion, strict)
    outcome = checks(result)
    assert not outcome["onnx.size"] and not outcome["onnx.latency_p99"] and not outcome["onnx.parity"]
    relaxed = gate.evaluate_gate(
        metrics, conversion, conversion.latency, champion, gate.GateConfig(max_regression={})
    )
    assert relaxed.passed, relaxed.reasons


def test_a_model_skl2onnx_cannot_convert_fails_the_gate_with_the_reason(registry: Registered) -> None:
    spec = datasets.DatasetSpec("logs", "classification", "y", (datasets.FeatureSpec("a"),), (0, 1))
    frame = pd.DataFrame({"a": np.linspace(1, 10, 80), "y": [0, 1] * 40})
    split = datasets.split(frame, spec)
    pipeline = Pipeline(
        [("p", ColumnTransformer([("f", FunctionTransformer(np.log1p), ["a"])])), ("m", LogisticRegression())]
    ).fit(split.x_train, split.y_train)
    settings = registry.settings
    client = connect(settings)
    conversion = convert.convert_version(
        client,
        pipeline,
        split,
        model_name=settings.model_name,
        version=registry.version,
        run_id=registry.run_id,
        tolerance=1e-5,
    )
    assert not conversion.converted
    result = gate.evaluate_gate({"roc_auc": 1.0, "accuracy": 1.0}, conversion, None, None, gate.GateConfig())
    assert not result.passed
    assert result.reasons[0].startswith("onnx.conversion: failed: ")
    assert "FunctionTransformer" in result.reasons[0] or "Unable" in result.reasons[0]


def test_forced_promotion_of_a_rejected_version_is_recorded(tmp_path: Path, split: datasets.Split) -> None:
    settings = make_settings(tmp_path / "state")
    weak = train_and_register(settings, split, "weak_logistic_regression", promote_it=False)
    client = connect(settings)
    decision = promote.Decision(True, "ops-lead", "incident: need the old behaviour")
    with pytest.raises(promote.PromotionRefusedError):
        promote.promote(client, settings.model_name, weak.version, decision)
    promote.promote(client, settings.model_name, weak.version, decision, force=True)
    tags = client.get_model_version(settings.model_name, weak.version).tags
    assert tags[Tag.PROMOTION_FORCED_BY] == "ops-lead"
    assert tags[Tag.PROMOTION_REASON] == "incident: need the old behaviour"
    assert alias_version(client, settings.model_name, CHAMPION) == weak.version
