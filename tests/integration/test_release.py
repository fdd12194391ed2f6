"""The release flow under steady load on `bentoml serve` (two workers): a good version goes through shadow
then canary to champion; a slow, a wrong and a broken one released as canaries answer at most their share
and are taken out at the end of their first window; no request fails."""

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flows import split as traffic
from flows.deploy import LocalService, served_version
from flows.faults import FaultKind, register_broken_version
from flows.gate import LiveThresholds
from flows.gateway import gateway
from flows.progressive import RELEASE_FAILED, RELEASE_VERDICT, ReleaseFailedError, release_flow
from flows.tracking import alias_version, connect
from flows.training import training_pipeline
from models import datasets
from models.registry import CHAMPION
from models.traffic import Shares
from tests.integration.load import finish_load, start_load
from tests.integration.test_rollout import ANY_CHAMPION, FAST

pytestmark = pytest.mark.integration

BAKE_S = 4.0
CANARY_SHARE = 25.0
FAULTS: tuple[FaultKind, ...] = ("slow", "wrong_outputs", "unloadable")
# The windows hold ~50 canary answers on two cores shared with the load and the rest of the suite, so their
# p99 is their slowest answer: a scheduling hiccup of 10 ms failed a good version once. The slow fault
# (0.8 s a call) is far past this budget.
RELEASE_GATE = ANY_CHAMPION.model_copy(update={"live": LiveThresholds(p99_slack_ms=100)})


def test_a_good_version_is_promoted_and_faulty_ones_are_taken_out_within_a_window_under_load(
    service: LocalService, split: datasets.Split, tmp_path: Path
) -> None:
    settings = service.settings
    client = connect(settings)
    registry = gateway(settings)
    assert training_pipeline(gate_config=ANY_CHAMPION, deploy_checks=FAST).version == "1"
    good = training_pipeline(
        recipe="hist_gradient_boosting", gate_config=ANY_CHAMPION, deploy_target="none", promotion="none"
    ).version
    assert good == "2"
    record = datasets.records(split.holdout.head(1), datasets.BREAST_CANCER)[0]
    out, stop = tmp_path / "load.jsonl", tmp_path / "stop"
    load = start_load(f"{service.url}/predict", {"records": [record]}, out, seconds=300, connections=4,
                      stop_file=str(stop), rate="100")  # fmt: skip
    windows: dict[str, tuple[float, float]] = {}
    try:
        time.sleep(2)
        began = time.time()
        summary = release_flow(
            version=good, requested_by="ana", reason="gradual", strategy="shadow-then-canary",
            steps=[CANARY_SHARE, 50], bake_s=BAKE_S, gate_config=RELEASE_GATE, deploy_checks=FAST,
        )  # fmt: skip
        windows["good"] = (began, time.time())
        assert f"v{good} promoted after 3 window(s)" in summary
        assert alias_version(client, settings.model_name, CHAMPION) == good
        assert served_version(service.url, settings.model_name) == "2"
        assert client.get_model_version(settings.model_name, "2").tags[RELEASE_VERDICT] == "promoted"
        assert traffic.current(registry).shares == Shares(0.0, 0.0)

        report: dict[str, Any] = {}
        for kind in FAULTS:
            broken = register_broken_version(client, settings, "2", kind)
            began = time.time()
            with pytest.raises(ReleaseFailedError, match=f"failed its canary {CANARY_SHARE:g}% window"):
                release_flow(
                    version=broken, requested_by="drill", reason=kind, strategy="canary",
                    steps=[CANARY_SHARE], bake_s=BAKE_S, gate_config=RELEASE_GATE, deploy_checks=FAST,
                )  # fmt: skip
            out_at = time.time()
            windows[kind] = (began, out_at)
            now = traffic.current(registry)
            assert (now.canary, now.shadow, now.shares) == (None, None, Shares(0.0, 0.0))
            assert alias_version(client, settings.model_name, CHAMPION) == "2"
            tags = client.get_model_version(settings.model_name, broken).tags
            assert tags[RELEASE_VERDICT] == "rolled_back" and "live." in tags[RELEASE_FAILED]
            report[kind] = {"version": broken, "seconds_to_share_0": round(out_at - began, 2),
                            "failed_checks": tags[RELEASE_FAILED]}  # fmt: skip
            # within one bake window of its release (and the time for the workers to see the split)
            assert out_at - began < BAKE_S + 2 * (settings.swap_poll_s * 2 + 1.0) + 5, report[kind]
    finally:
        stop.touch()
        outcomes = finish_load(load, out)

    assert Counter(o["status"] for o in outcomes) == {200: len(outcomes)}  # no request failed
    for kind in FAULTS:
        start, end = windows[kind]
        during = [o for o in outcomes if start <= o["started"] <= end]
        by_faulty = sum(o["version"] == report[kind]["version"] for o in during)
        report[kind]["requests"], report[kind]["answered_by_it"] = len(during), by_faulty
        assert by_faulty <= 0.40 * len(during), report[kind]  # at most its 25 %, within sampling
    answered = Counter(o["version"] for o in outcomes)
    assert set(answered) <= {"1", "2", report["slow"]["version"]}, answered  # wrong, broken never answer
    print("\nrelease drill:", json.dumps({**report, "requests": len(outcomes), "failed": 0}, indent=2))
