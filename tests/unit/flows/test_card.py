"""The model card and the reviewer's evidence are built from facts, not from templates left blank."""

from flows.approval import evidence_markdown
from flows.card import CardFacts, model_card
from flows.convert import ConvertResult
from flows.gate import ChampionScores, GateConfig, evaluate_gate
from flows.promote import Decision
from models import datasets
from models.convert import ParityReport
from models.recipes import get_recipe
from models.runtime import LatencyReport

METRICS = {"accuracy": 0.96, "roc_auc": 0.99}
CHAMPION = ChampionScores("4", {"accuracy": 0.95, "roc_auc": 0.992})
CONVERSION = ConvertResult(
    "models:/m-9", ParityReport(143, True, 2e-16, 1e-5), None, 3709, LatencyReport(300, 0.06, 0.08, 0.07, 0.1)
)
GATE = evaluate_gate(METRICS, CONVERSION, CONVERSION.latency, CHAMPION, GateConfig())


def facts(decision: Decision | None) -> CardFacts:
    return CardFacts(
        model_name="bc",
        version="5",
        run_id="abc123",
        recipe=get_recipe("logistic_regression"),
        spec=datasets.BREAST_CANCER,
        data_source="demo:breast_cancer",
        data_digest="0123456789abcdef",
        rows=569,
        validation="94/94 expectations passed",
        git_commit="deadbeef",
        metrics=METRICS,
        champion=CHAMPION,
        gate=GATE,
        conversion=CONVERSION,
        decision=decision,
    )


def test_model_card_has_every_section_with_its_facts() -> None:
    card = model_card(facts(Decision(True, "ana", "better recall")))
    for section in ("Intended use", "Data", "Metrics", "Gate: passed", "ONNX", "Promotion", "Lineage"):
        assert f"## {section}" in card
    assert "`0123456789abcdef` (569 rows)" in card
    assert "| accuracy | 0.9600 | 0.9500 (v4) |" in card
    assert "| champion.accuracy | 0.9600 vs v4 0.9500 (delta +0.0100) | delta >= -0.01 | pass |" in card
    assert "max difference 2.00e-16 on 143 rows" in card
    assert "decision: approved by ana: better recall" in card
    assert "MLflow run: `abc123`" in card and "git commit: `deadbeef`" in card


def test_model_card_without_a_decision_says_so() -> None:
    assert "decision: none (not offered for promotion)" in model_card(facts(None))


def test_evidence_shows_deltas_against_the_champion() -> None:
    text = evidence_markdown("bc", "5", METRICS, CHAMPION, "94/94 expectations passed", GATE)
    assert "| roc_auc | 0.9900 | 0.9920 | -0.0020 |" in text
    assert "**Gate:** passed" in text
    first = evidence_markdown("bc", "1", METRICS, None, "ok", GATE)
    assert "no champion yet" in first
