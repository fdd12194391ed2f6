"""Reference profiles and drift statistics on real data."""

from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import datasets
from models.profile import OTHER, LiveProfile, build_profile, psi


@pytest.fixture(scope="module")
def churn() -> datasets.Split:
    return datasets.split(datasets.load_frame("demo:churn"), datasets.CHURN)


def profile_of(split: datasets.Split) -> dict[str, Any]:
    return build_profile(split.x_train, split.spec, split.y_train.to_numpy())


def live(
    profile: dict[str, Any], frame: pd.DataFrame, spec: datasets.DatasetSpec, predictions
) -> LiveProfile:
    accumulated = LiveProfile(profile)
    for row, prediction in zip(frame[spec.feature_names].to_dict(orient="records"), predictions, strict=True):
        accumulated.add(row, prediction)
    return accumulated


def test_profile_holds_bins_samples_and_category_shares(churn: datasets.Split) -> None:
    profile = profile_of(churn)
    tenure = profile["features"]["tenure_months"]
    assert tenure["kind"] == "numeric" and len(tenure["proportions"]) == len(tenure["edges"]) + 1
    assert sum(tenure["proportions"]) == pytest.approx(1)
    assert len(tenure["sample"]) == 2000
    assert set(profile["features"]["plan"]["proportions"]) == {"basic", "standard", "premium"}
    assert profile["prediction"]["kind"] == "categorical"


def test_same_distribution_shows_no_drift(churn: datasets.Split) -> None:
    profile = profile_of(churn)
    result = live(profile, churn.holdout, churn.spec, churn.y_holdout)
    for drift in result.feature_drift():
        assert drift.psi < 0.05, drift
        assert drift.p_value > 0.001, drift
    assert result.prediction_drift().psi < 0.05


def test_a_shifted_feature_and_a_new_category_drift_on_the_right_feature(churn: datasets.Split) -> None:
    profile = profile_of(churn)
    shifted = churn.holdout.copy()
    shifted["monthly_charges"] += 2 * shifted["monthly_charges"].std()
    shifted["region"] = "mars"
    drifts = {d.name: d for d in live(profile, shifted, churn.spec, churn.y_holdout).feature_drift()}
    assert drifts["monthly_charges"].psi > 1 and drifts["monthly_charges"].p_value < 1e-6
    assert drifts["region"].psi > 1 and drifts["region"].live[drifts["region"].bins.index(OTHER)] == 1.0
    assert all(drifts[n].psi < 0.05 for n in ("tenure_months", "support_calls", "plan", "contract"))


def test_psi_is_zero_for_identical_shares_and_grows_with_distance() -> None:
    same = np.array([0.25, 0.25, 0.5])
    assert psi(same, same) == 0
    assert 0 < psi(same, np.array([0.3, 0.2, 0.5])) < psi(same, np.array([0.6, 0.1, 0.3]))
