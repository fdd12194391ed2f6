"""Progressive delivery: a version reaches consumers step by step, each step judged on live evidence.

The ``release`` flow (deployment ``release`` in ``prefect.yaml``) takes a version that passed its gate and a
strategy:

- ``direct``: promote and deploy at once (the ``promote`` flow's behaviour, with its post-deploy checks);
- ``shadow``: the version gets a copy of every request for one bake window, then the window is judged;
- ``canary``: it answers ``steps`` percent of requests (by routing key), one bake window each;
- ``shadow-then-canary``: both, in that order.

Each window is judged by ``flows/analysis.py`` over the local service's inference log, with the thresholds
of ``GateConfig.live``. All windows passed: the split is cleared and the version is promoted (``champion``
moves, compare-and-set against the champion the release started from) and deployed with the post-deploy
checks. A failed window: the version's share goes to 0 at once, its role is cleared, the version is tagged
with the failed checks and the flow run fails. Every release is an MLflow run in ``<experiment>-releases``
(parameters, each window's figures by step, the verdict), tags on the version, and a Prefect table
artifact ``release-<model>``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows import card, promote, rollout, split
from flows.analysis import analyse
from flows.checks import DeployChecks
from flows.gate import GateConfig, GateResult, LiveThresholds
from flows.gateway import Registry, gateway
from flows.monitor import sparkline
from flows.release import deploy_version, promote_version
from flows.runs import artifact_key, log_stage
from models.inference_records import feedback_labels, read_records
from models.registry import CANARY, CHAMPION, SHADOW, Tag
from models.settings import Settings

Strategy = Literal["direct", "shadow", "canary", "shadow-then-canary"]
RELEASE_VERDICT = Tag.RELEASE_VERDICT
RELEASE_FAILED = Tag.RELEASE_FAILED
RELEASE_RUN = Tag.RELEASE_RUN


class ReleaseFailedError(RuntimeError):
    """A window's checks failed: the challenger's share went to 0 and it was not promoted."""


@dataclass(frozen=True)
class Window:
    role: str
    share: float
    started: float
    ended: float
    result: GateResult
    figures: dict[str, float]

    @property
    def label(self) -> str:
        return f"{self.role} {self.share:g}%"


@dataclass
class Release:
    version: str
    champion: str
    strategy: str
    windows: list[Window] = field(default_factory=list)

    def to_markdown(self, verdict: str) -> str:
        """Each window's figures, and a chart of error rate, p99 and agreement across the windows."""
        lines = [
            f"# Release v{self.version} against v{self.champion} ({self.strategy}): {verdict}", "",
            "| window | verdict | requests (champion / challenger) | error rate | p99 ms | agreement | PSI |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for w in self.windows:
            f = w.figures
            lines.append(
                f"| {w.label} | {'pass' if w.result.passed else 'fail'} "
                f"| {f.get('champion.requests', 0):.0f} / {f.get('challenger.requests', 0):.0f} "
                f"| {f.get('champion.error_rate', 0):.4f} / {f.get('challenger.error_rate', 0):.4f} "
                f"| {_num(f.get('champion.p99_ms'))} / {_num(f.get('challenger.p99_ms'))} "
                f"| {_num(f.get('agreement'), 4)} | {_num(f.get('prediction_psi'), 4)} |"
            )
        series = {
            "challenger error rate": [w.figures.get("challenger.error_rate", 0.0) for w in self.windows],
            "challenger p99 ms": [w.figures.get("challenger.p99_ms", 0.0) for w in self.windows],
            "agreement": [w.figures.get("agreement", 0.0) for w in self.windows],
        }
        lines += ["", "Per window, first to last:", ""]
        lines += [f"- {name}: `{sparkline(values)}` {_series(values)}" for name, values in series.items()]
        return "\n".join(lines) + "\n"

    def table(self) -> list[dict[str, str]]:
        return [
            {"window": w.label, "check": c.name, "value": c.value, "threshold": c.threshold,
             "verdict": "pass" if c.passed else "fail"}
            for w in self.windows for c in w.result.checks
        ]  # fmt: skip


def _num(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _series(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def phases(strategy: Strategy, steps: list[float]) -> list[tuple[str, float]]:
    """The windows of a strategy: (role, share) in order; the last canary step of 100 % is the promotion."""
    canary = [(CANARY, float(s)) for s in steps if 0 < s < 100]
    if strategy == "direct":
        return []
    if strategy == "shadow":
        return [(SHADOW, 100.0)]
    if strategy == "canary":
        return canary
    return [(SHADOW, 100.0), *canary]


def settle_s(settings: Settings) -> float:
    """Long enough for every worker to have read a new split: two polls and a second."""
    return settings.swap_poll_s * 2 + 1.0


@task(cache_policy=NONE)
def bake(
    settings: Settings,
    registry: Registry,
    release: Release,
    role: str,
    share: float,
    bake_s: float,
    by: str,
    live: LiveThresholds,
) -> Window:
    """Give the version its role and share, wait a bake window, judge it."""
    other = SHADOW if role == CANARY else CANARY  # the release owns the split: one role at a time
    split.set_split(
        registry, by=by, reason=f"release v{release.version}: {role} {share:g}%",
        versions={role: release.version}, shares={role: share, other: 0.0},
    )  # fmt: skip
    time.sleep(settle_s(settings))
    started = time.time()
    time.sleep(bake_s)
    ended = time.time()
    records = read_records(settings.inference_log_dir, since=started, until=ended)
    labels = feedback_labels(settings.feedback_log_dir, model=settings.model_name)  # came for this window
    result, figures = analyse(records, release.champion, release.version, role, live, labels)
    window = Window(role, share, started, ended, result, figures)
    verdict = "passed" if result.passed else "failed"
    log_stage("release", "window=%r verdict=%s %s", window.label, verdict, "; ".join(result.reasons) or "")
    return window


def record(settings: Settings, registry: Registry, release: Release, verdict: str, reasons: list[str]) -> str:
    """The release as an MLflow run, tags on the version, and a Prefect table artifact; the run id."""
    client = registry.client
    run = client.create_run(
        registry.experiment("releases"),
        run_name=f"release v{release.version} ({release.strategy})",
        tags={"model": settings.model_name, "version": release.version, "verdict": verdict},
    )
    run_id = str(run.info.run_id)
    for key, value in {"version": release.version, "champion": release.champion,
                       "strategy": release.strategy, "windows": len(release.windows)}.items():  # fmt: skip
        client.log_param(run_id, key, value)
    for step, window in enumerate(release.windows):
        for name, value in window.figures.items():
            client.log_metric(run_id, name, float(value), step=step)
        client.log_metric(run_id, "share", window.share, step=step)
        client.log_metric(run_id, "passed", float(window.result.passed), step=step)
    client.log_text(run_id, "\n".join(reasons) or "all windows passed", "verdict.txt")
    client.set_terminated(run_id, "FINISHED" if verdict == "promoted" else "FAILED")
    registry.set_tags(
        release.version,
        {RELEASE_VERDICT: verdict, RELEASE_FAILED: "; ".join(reasons) or "none", RELEASE_RUN: run_id},
    )
    card.refresh(client, settings, release.version, event=f"its release ({release.strategy}): {verdict}")
    create_markdown_artifact(
        release.to_markdown(verdict),
        key=artifact_key("release-report", settings.model_name),
        description=f"release v{release.version}: figures and chart per window",
    )
    create_table_artifact(
        release.table()
        or [{"window": "none", "check": "direct", "value": "", "threshold": "", "verdict": ""}],
        key=artifact_key("release", settings.model_name),
        description=f"release v{release.version} ({release.strategy}): {verdict}",
    )
    return run_id


@flow(name="release")
def release_flow(
    version: str,
    requested_by: str,
    reason: str,
    strategy: Strategy = "canary",
    steps: list[float] | None = None,
    bake_s: float = 30.0,
    gate_config: GateConfig | None = None,
    deploy_checks: DeployChecks | None = None,
) -> str:
    """Release ``version`` gradually on the local service; each window judged by ``gate_config.live``.

    ``steps``: the canary's shares in percent (default 5, 25, 50; promotion is the last step).
    """
    settings = Settings()
    registry = gateway(settings)
    champion = registry.alias(CHAMPION)
    if champion is None:
        raise ValueError(f"{settings.model_name} has no champion to release against: promote a first version")
    if registry.tags(version).get(Tag.GATE_VERDICT) != "passed":
        raise promote.PromotionRefusedError(f"version {version} did not pass its gate: it is not released")
    release = Release(version, champion, strategy)
    checks = deploy_checks or DeployChecks()
    live = (gate_config or GateConfig()).live
    for role, share in phases(strategy, steps if steps is not None else [5.0, 25.0, 50.0]):
        window = bake(settings, registry, release, role, share, bake_s, requested_by, live)
        release.windows.append(window)
        if not window.result.passed:
            split.set_split(registry, by="release", reason=f"v{version} failed {window.label}", clear=True)
            reasons = [f"{window.label}: {r}" for r in window.result.reasons]
            run_id = record(settings, registry, release, "rolled_back", reasons)
            raise ReleaseFailedError(
                f"v{version} failed its {window.label} window ({'; '.join(window.result.reasons)}): its "
                f"share is 0 and v{champion} answers every request (release run {run_id})"
            )
    if release.windows:
        split.set_split(registry, by="release", reason=f"v{version} passed every window", clear=True)
    decision = promote.Decision(True, requested_by, f"release ({strategy}): {reason}")
    promote_version(settings, version, decision, expected_champion=champion)
    try:
        deploy_version(settings, version, "local", [], checks, f"release by {requested_by}", version)
    except rollout.DeploymentFailedError as exc:  # rolled back by the post-deploy checks
        record(settings, registry, release, "rolled_back", [f"post-deploy checks: {exc}"])
        raise
    run_id = record(settings, registry, release, "promoted", [])
    return f"v{version} promoted after {len(release.windows)} window(s) (release run {run_id})"
