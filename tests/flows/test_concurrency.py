"""Two promotions or two pipeline runs at once for one model: ``champion`` only ever moves from the
champion the candidate's gate compared against, so it always points at a version that passed its gate
against the version it replaced. Real threads against one real MLflow store."""

import threading
from collections.abc import Callable
from typing import Any

from flows import promote
from flows.gate import GateConfig
from flows.tracking import alias_version, connect
from flows.training import PipelineResult, training_pipeline
from models import datasets
from models.registry import CHAMPION, Tag
from models.settings import Settings
from tests.conftest import train_and_register

ANY_CHAMPION = GateConfig(max_regression={}, latency_p99_ms=100)


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; each result or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - returned for the test to look at
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def test_two_promotions_gated_against_the_same_champion_move_it_once(
    flow_settings: Settings, split: datasets.Split
) -> None:
    first = train_and_register(flow_settings, split, "logistic_regression", promote_it=True)
    a = train_and_register(flow_settings, split, "random_forest", promote_it=False, config=ANY_CHAMPION)
    b = train_and_register(flow_settings, split, "logistic_regression", promote_it=False, config=ANY_CHAMPION)
    client, name = connect(flow_settings), flow_settings.model_name
    decision = promote.Decision(True, "test", "race")

    def promote_after_gate(version: str) -> Callable[[], str | None]:
        return lambda: promote.promote(client, name, version, decision, expected_champion=first.version)

    outcomes = at_once(promote_after_gate(a.version), promote_after_gate(b.version))
    superseded = [o for o in outcomes if isinstance(o, promote.PromotionSupersededError)]
    assert len(superseded) == 1, outcomes  # without the compare-and-set both would "succeed"
    assert outcomes.count(first.version) == 1  # the winner replaced the champion it was gated against
    winner = alias_version(client, name, CHAMPION)
    assert winner in {a.version, b.version}
    assert client.get_model_version(name, winner).tags[Tag.PROMOTION_PREVIOUS] == first.version
    loser = ({a.version, b.version} - {winner}).pop()
    assert Tag.PROMOTION_DECISION not in client.get_model_version(name, loser).tags  # nothing recorded


def test_two_pipeline_runs_at_once_leave_champion_on_a_version_gated_against_what_it_replaced(
    flow_settings: Settings,
) -> None:
    assert training_pipeline(deploy_target="none").version == "1"

    def pipeline(recipe: str) -> Callable[[], PipelineResult]:
        return lambda: training_pipeline(recipe=recipe, gate_config=ANY_CHAMPION, deploy_target="none")

    results = at_once(pipeline("random_forest"), pipeline("hist_gradient_boosting"))
    assert all(isinstance(r, PipelineResult) and r.verdict == "champion" for r in results), results
    client, name = connect(flow_settings), flow_settings.model_name
    versions = {str(v.version): v.tags for v in client.search_model_versions(f"name='{name}'")}
    assert sorted(versions) == ["1", "2", "3"]
    champion = alias_version(client, name, CHAMPION)
    assert champion in {"2", "3"}
    assert versions[champion][Tag.GATE_VERDICT] == "passed"
    # every promotion replaced exactly the champion its (last) gate compared against: a chain 1 -> x -> y
    promoted = {v: t for v, t in versions.items() if Tag.PROMOTION_PREVIOUS in t}
    assert all(t[Tag.GATE_CHAMPION] == t[Tag.PROMOTION_PREVIOUS] for t in promoted.values()), promoted
    chain = {t[Tag.PROMOTION_PREVIOUS]: v for v, t in promoted.items()}
    assert chain.get("1") is not None and chain.get(chain["1"]) == champion, chain
