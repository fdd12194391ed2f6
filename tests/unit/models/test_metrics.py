import pytest
from sklearn.pipeline import Pipeline

from models import datasets
from models.metrics import evaluate


def test_classification_metrics_on_holdout(fitted: Pipeline, split: datasets.Split) -> None:
    scores = evaluate(fitted, split.x_holdout, split.y_holdout, "classification")
    assert set(scores) == {"accuracy", "f1", "log_loss", "roc_auc"}
    assert 0.9 < scores["accuracy"] <= 1.0
    assert 0.95 < scores["roc_auc"] <= 1.0
    assert scores["log_loss"] > 0


def test_a_worse_model_scores_worse(fitted: Pipeline, split: datasets.Split) -> None:
    from flows.train import fit

    weak = fit(split, "weak_logistic_regression")
    good = evaluate(fitted, split.x_holdout, split.y_holdout, "classification")
    bad = evaluate(weak, split.x_holdout, split.y_holdout, "classification")
    assert bad["accuracy"] < good["accuracy"]
    assert bad["log_loss"] > good["log_loss"]


def test_regression_metrics() -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    x = pd.DataFrame({"a": np.arange(20.0)})
    y = pd.Series(2 * x["a"] + 1)
    model = Pipeline([("m", LinearRegression())]).fit(x, y)
    scores = evaluate(model, x, y, "regression")
    assert scores["rmse"] == pytest.approx(0, abs=1e-9)
    assert scores["r2"] == pytest.approx(1)
