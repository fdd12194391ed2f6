"""The traffic generator's plans: shifts, new categories and label balance, deterministic by seed."""

import pandas as pd
import pytest

from flows.traffic import parse_shift, plan_traffic
from models import datasets


@pytest.fixture(scope="module")
def churn() -> pd.DataFrame:
    return datasets.split(datasets.load_frame("demo:churn"), datasets.CHURN).holdout


def test_plan_is_deterministic_and_sized(churn: pd.DataFrame) -> None:
    first = plan_traffic(churn, datasets.CHURN, 500, [], None, seed=3)
    assert len(first) == 500
    pd.testing.assert_frame_equal(first, plan_traffic(churn, datasets.CHURN, 500, [], None, seed=3))


def test_numeric_shift_in_standard_deviations(churn: pd.DataFrame) -> None:
    base = plan_traffic(churn, datasets.CHURN, 300, [], None)
    shifted = plan_traffic(churn, datasets.CHURN, 300, ["monthly_charges:+2sd"], None)
    delta = shifted["monthly_charges"] - base["monthly_charges"]
    assert delta.to_numpy() == pytest.approx(2 * base["monthly_charges"].std())  # of the rows sent
    assert (shifted["tenure_months"] == base["tenure_months"]).all()


def test_new_category_and_label_balance(churn: pd.DataFrame) -> None:
    planned = plan_traffic(churn, datasets.CHURN, 400, ["plan:=platinum"], "label:1=0.9")
    assert set(planned["plan"]) == {"platinum"}
    assert planned["churned"].mean() == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize("bad", ["monthly_charges", "monthly_charges:2sd", "plan:+1"])
def test_bad_shifts_are_refused_with_the_expected_form(churn: pd.DataFrame, bad: str) -> None:
    with pytest.raises(ValueError, match=r"expected|categorical"):
        plan_traffic(churn, datasets.CHURN, 10, [bad], None)


def test_parse_shift() -> None:
    shift = parse_shift("mean_radius:-1.5sd")
    assert (shift.feature, shift.op, shift.value, shift.in_sd) == ("mean_radius", "-", "1.5", True)
