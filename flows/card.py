"""The model card: one Markdown page per version, logged to its MLflow run."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient

from flows.convert import ConvertResult
from flows.gate import ChampionScores, GateResult
from flows.promote import Decision
from models.datasets import DatasetSpec
from models.recipes import Recipe
from models.registry import MODEL_CARD_ARTIFACT, Tag


@dataclass(frozen=True)
class CardFacts:
    model_name: str
    version: str
    run_id: str
    recipe: Recipe
    spec: DatasetSpec
    data_source: str
    data_digest: str
    rows: int
    validation: str
    git_commit: str
    metrics: dict[str, float]
    champion: ChampionScores | None
    gate: GateResult
    conversion: ConvertResult
    decision: Decision | None


def _metrics_table(metrics: dict[str, float], champion: ChampionScores | None) -> list[str]:
    if champion is None or champion.error:
        rows = [f"| {name} | {value:.4f} | - |" for name, value in sorted(metrics.items())]
        header = "| metric | this version | champion |"
    else:
        rows = [
            f"| {name} | {value:.4f} | {champion.metrics.get(name, float('nan')):.4f} (v{champion.version}) |"
            for name, value in sorted(metrics.items())
        ]
        header = "| metric | this version | champion, same rows |"
    return [header, "|---|---|---|", *rows]


def model_card(facts: CardFacts) -> str:
    parity = facts.conversion.parity
    latency = facts.conversion.latency
    decision = facts.decision
    champion_note = (
        "none (first model)"
        if facts.champion is None
        else facts.champion.error or f"v{facts.champion.version}, scored on this version's held-out rows"
    )
    return "\n".join(
        [
            f"# Model card: {facts.model_name} v{facts.version}",
            "",
            "## Intended use",
            f"{facts.spec.description} Task: {facts.spec.task}, predicting `{facts.spec.target}` from "
            f"{len(facts.spec.features)} named features ({', '.join(facts.spec.feature_names)}).",
            f"Model: `{facts.recipe.name}`: {facts.recipe.description}",
            "Served as ONNX through onnxruntime; inputs outside the training ranges were never validated.",
            "",
            "## Data",
            f"- source: `{facts.data_source}`",
            f"- digest: `{facts.data_digest}` ({facts.rows} rows)",
            f"- validation (Great Expectations): {facts.validation}",
            "",
            "## Metrics (held-out rows)",
            f"Champion at training time: {champion_note}.",
            "",
            *_metrics_table(facts.metrics, facts.champion),
            "",
            f"## Gate: {facts.gate.verdict}",
            facts.gate.to_markdown(),
            "",
            "## ONNX",
            f"- model: `{facts.conversion.onnx_uri or 'not converted: ' + str(facts.conversion.error)}`",
            f"- parity: {'passed' if parity and parity.passed else 'failed'}"
            + (f", max difference {parity.max_abs_diff:.2e} on {parity.rows} rows" if parity else ""),
            f"- latency (one row, one thread): p50 {latency.p50_ms:.3f} ms, p99 {latency.p99_ms:.3f} ms"
            if latency
            else "- latency: not measured",
            "",
            "## Promotion",
            f"- decision: {decision.label} by {decision.by}: {decision.reason}"
            if decision
            else "- decision: none (not offered for promotion)",
            "",
            "## Lineage",
            f"- MLflow run: `{facts.run_id}`",
            f"- git commit: `{facts.git_commit}`",
            f"- registered model: `{facts.model_name}` version {facts.version}",
        ]
    )


def log_model_card(client: MlflowClient, facts: CardFacts) -> str:
    with mlflow.start_run(run_id=facts.run_id):
        mlflow.log_text(model_card(facts), MODEL_CARD_ARTIFACT)
    uri = f"runs:/{facts.run_id}/{MODEL_CARD_ARTIFACT}"
    client.set_model_version_tag(facts.model_name, facts.version, Tag.MODEL_CARD, uri)
    return uri
