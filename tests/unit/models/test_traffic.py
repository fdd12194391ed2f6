"""The split between traffic roles: shares, stickiness, a change of share, the tags they come from."""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.registry import CANARY, SHADOW, ModelTag
from models.traffic import MAX_KEY_CHARS, Shares, bucket, routing_key, takes

KEYS = [uuid.uuid4().hex for _ in range(20_000)]


@pytest.mark.parametrize("share", [0.0, 5.0, 25.0, 50.0, 100.0])
def test_a_share_of_keys_goes_to_the_role_within_sampling_error(share: float) -> None:
    taken = sum(takes(share, key, CANARY) for key in KEYS) / len(KEYS) * 100
    assert abs(taken - share) < 1.2  # 20,000 keys: about four standard errors at 50 %


def test_one_key_always_lands_in_the_same_place() -> None:
    for key in KEYS[:200]:
        assert len({takes(25.0, key, CANARY) for _ in range(5)}) == 1
        assert bucket(key, CANARY) == bucket(key, CANARY)


def test_raising_a_share_keeps_every_key_it_had_and_lowering_it_only_lets_keys_go() -> None:
    steps = [5.0, 25.0, 50.0, 100.0]
    taken = [{key for key in KEYS if takes(share, key, CANARY)} for share in steps]
    for smaller, larger in itertools.pairwise(taken):
        assert smaller <= larger and len(smaller) < len(larger)
    assert taken[-1] == set(KEYS)
    assert not any(takes(0.0, key, CANARY) for key in KEYS)


def test_the_canary_and_the_shadow_split_independently() -> None:
    canary = {key for key in KEYS if takes(50.0, key, CANARY)}
    shadow = {key for key in KEYS if takes(50.0, key, SHADOW)}
    both = len(canary & shadow) / len(KEYS)
    assert abs(both - 0.25) < 0.015  # independent halves overlap on a quarter


@given(st.text(min_size=1, max_size=2 * MAX_KEY_CHARS))
def test_any_key_has_a_place_in_0_to_100(key: str) -> None:
    assert 0.0 <= bucket(key, CANARY) < 100.0


def test_the_routing_key_is_the_consumers_else_the_request_id_and_none_when_not_split() -> None:
    assert routing_key("customer-42", "req-1", None, probe=False) == "customer-42"
    assert routing_key(None, "req-1", None, probe=False) == "req-1"
    assert routing_key("", "req-1", None, probe=False) == "req-1"
    assert routing_key("customer-42", "req-1", "3", probe=False) is None  # a version asked for by path
    assert routing_key("customer-42", "req-1", None, probe=True) is None  # a check's probe: the champion


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({}, Shares(0.0, 0.0)),
        ({ModelTag.CANARY_PERCENT: "5", ModelTag.SHADOW_PERCENT: "100"}, Shares(5.0, 100.0)),
        ({ModelTag.CANARY_PERCENT: "12.5"}, Shares(12.5, 0.0)),
        ({ModelTag.CANARY_PERCENT: " "}, Shares(0.0, 0.0)),
        # a typo never exposes a version: the share is 0
        ({ModelTag.CANARY_PERCENT: "five"}, Shares(0.0, 0.0)),
        ({ModelTag.CANARY_PERCENT: "150"}, Shares(0.0, 0.0)),
        ({ModelTag.CANARY_PERCENT: "-5"}, Shares(0.0, 0.0)),
        ({ModelTag.CANARY_PERCENT: "nan"}, Shares(0.0, 0.0)),
    ],
)
def test_shares_come_from_the_registered_models_tags(tags: dict[str, str], expected: Shares) -> None:
    assert Shares.from_tags(tags) == expected
