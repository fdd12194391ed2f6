"""Command line: ``mlops demo | stack | run | promote | deploy | rollback | monitor | status`` and more."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from models.settings import Settings

if TYPE_CHECKING:
    from flows.prefect_server import TemporaryServer

# The commands that run a flow: without a configured Prefect server they get a temporary one.
FLOW_COMMANDS = {"demo", "run", "promote", "deploy", "rollback", "monitor", "batch-score"}


def _demo(settings: Settings, prefect: TemporaryServer | None) -> int:
    """Train, gate, promote and serve the demo model, then print a prediction from the running service.

    Both servers start first, side by side (the temporary Prefect server migrating its database, the model
    service importing), while this process imports the flows; the service follows the ``champion`` alias,
    so it serves the new version as soon as the pipeline promotes it.
    """
    started = time.monotonic()
    print("» running the training pipeline on the bundled breast-cancer data ...", flush=True)
    from flows.deploy import LocalService, predict
    from flows.gateway import gateway

    service = LocalService(settings)
    gateway(settings)  # the registry's database exists before the service reads it
    already_running = service.pid() is not None
    service.start()
    from flows.training import training_pipeline
    from models import datasets

    try:
        if prefect is not None:
            prefect.wait_ready()
        result = training_pipeline()
    except BaseException:
        if not already_running:  # a failed demo leaves nothing running
            service.stop()
        raise
    if result.served_url is None:
        if not already_running:
            service.stop()
        print(f"pipeline ended with version {result.version} {result.verdict}: {result.reasons}")
        return 1
    spec = datasets.BREAST_CANCER
    example = datasets.records(datasets.load_frame(datasets.demo_source(spec.name)).tail(1), spec)
    response = predict(result.served_url, example)
    elapsed = time.monotonic() - started
    print(
        f"\n» model {result.model_name} version {result.version} is champion and served "
        f"at {result.served_url} (pid {service.pid()}), {elapsed:.0f}s\n"
        f"» a prediction from it (POST {result.served_url}/predict):\n"
        f"{json.dumps(response, indent=2)}\n"
        f"» the service keeps running; stop it with: make stop   (log: {service.log_file})"
    )
    return 0


def gate_table(settings: Settings, version: str) -> str:
    """The gate's checks as recorded on the version's tags, one line each."""
    from flows.gateway import gateway
    from models.registry import Tag

    tags = gateway(settings).tags(version)
    prefix = Tag.gate_check("")
    rows = [(key.removeprefix(prefix), value) for key, value in tags.items() if key.startswith(prefix)]
    width = max((len(name) for name, _ in rows), default=5)
    lines = [f"{name:<{width}}  {value}" for name, value in sorted(rows)]
    return "\n".join([f"gate for {settings.model_name} v{version}: {tags.get(Tag.GATE_VERDICT)}", *lines])


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from flows.gate import GateConfig
    from flows.training import training_pipeline

    result = training_pipeline(
        data_source=args.data_source or f"demo:{args.dataset}",
        dataset=args.dataset,
        recipe=args.recipe,
        gate_config=GateConfig.model_validate_json(args.gate) if args.gate else None,
        promotion=args.promotion,
        deploy_target=args.deploy,
    )
    print(json.dumps(result.__dict__, indent=2))
    if result.version is not None:
        print(gate_table(settings, result.version))
    return 0 if result.verdict == "champion" else 1


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    from flows.release import promote_flow

    previous = promote_flow(
        version=args.version,
        requested_by=args.by,
        reason=args.reason,
        force=args.force,
        deploy_target=args.deploy,
    )
    print(f"champion: v{previous} -> v{args.version}")
    return 0


def _stack(settings: Settings) -> int:
    """Start the local stack in the foreground; Ctrl-C or SIGTERM stops all of it."""
    import signal
    import threading

    from flows.processes import StartupError
    from flows.stack import Stack, prefect_env, run_pipeline_deployment, stack_settings

    os.environ.update(prefect_env(stack_settings(settings)))  # before Prefect is imported

    def say(line: str) -> None:
        print(line, flush=True)

    stack = Stack(settings, out=say)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.monotonic()
    try:
        stack.start(pipeline=lambda parameters: run_pipeline_deployment(say, parameters))
        if stop.is_set():
            return 130
        print(f"\n» the stack is up in {time.monotonic() - started:.0f}s:\n{stack.describe()}", flush=True)
        print("» Ctrl-C stops every process; the state stays for the next start", flush=True)
        died = stack.wait(stop)
        if died is not None:
            print(f"» {died} exited on its own; stopping the rest (logs in {stack.settings.state_path}/logs)")
    except StartupError as exc:
        print(f"» the stack did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        print("» stopping ...", flush=True)
        stack.stop()
        print("» stopped", flush=True)
    return 1 if died is not None else 0


def _stop(settings: Settings) -> int:
    from flows.deploy import LocalService
    from flows.stack import stop_leftovers

    stopped = LocalService(settings).stop()
    print("service stopped" if stopped else "no service was running")
    if leftovers := stop_leftovers(settings):
        print(f"stopped {len(leftovers)} processes of a stack that was not stopped with Ctrl-C")
    return 0


def _status(settings: Settings, replica_urls: list[str]) -> int:
    from flows import split
    from flows.deploy import LocalService, served_version
    from flows.gateway import gateway
    from flows.rollout import recent
    from models.registry import CHALLENGER, CHAMPION

    registry = gateway(settings)
    service = LocalService(settings)
    urls = replica_urls or ([service.url] if service.pid() is not None else [])
    print(f"model       {settings.model_name}")
    print(f"champion    {registry.alias(CHAMPION)}")
    print(f"challenger  {registry.alias(CHALLENGER)}")
    live = registry.history()
    print(f"live so far {', '.join(live) or 'none'}")
    if not urls:
        print("replicas    none running (local service stopped)")
    for url in urls:
        try:
            print(
                f"replica     {url} serves v{served_version(url, settings.model_name, verify=service.verify)}"
            )
        except Exception as exc:  # noqa: BLE001 - status reports whatever it finds
            print(f"replica     {url} not answering ({type(exc).__name__})")
    try:
        for line in split.current(registry).lines():
            print(line)
    except Exception as exc:  # noqa: BLE001 - status reports whatever it finds
        print(f"split       not readable ({type(exc).__name__})")
    for entry in recent(registry.client, settings, limit=5):
        print(f"deployment  {entry.get('finished_at', '?')}  {entry.get('summary', '')}")
    return 0


def _split(settings: Settings, args: argparse.Namespace) -> int:
    from flows import split
    from flows.gateway import gateway

    versions = {
        role: v for role, v in (("canary", args.canary_version), ("shadow", args.shadow_version)) if v
    }
    shares = {role: p for role, p in (("canary", args.canary), ("shadow", args.shadow)) if p is not None}
    registry = gateway(settings)
    if not (versions or shares or args.clear):
        lines = split.current(registry).lines()
    else:
        try:
            done = split.set_split(
                registry, by=args.by, reason=args.reason, versions=versions, shares=shares, clear=args.clear
            )
        except split.SplitRefusedError as exc:
            print(f"» split: {exc}", file=sys.stderr)
            return 2
        lines = [*done.lines(), "every worker applies it at its next alias poll (MLOPS_SWAP_POLL_S)"]
    print(f"model       {settings.model_name}")
    for line in lines:
        print(line)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from flows.release import deploy_flow

    print(deploy_flow(requested_by=args.by, deploy_target=args.target, replica_urls=args.replica))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from flows.release import rollback_flow

    summary = rollback_flow(
        requested_by=args.by,
        reason=args.reason,
        to_version=args.to,
        deploy_target=args.target,
        replica_urls=args.replica,
    )
    print(summary)
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from flows.monitoring import monitor_flow

    result = monitor_flow(
        version=args.version, window_minutes=args.minutes, labels_path=args.labels, retrain=args.retrain
    )
    print(json.dumps(result, indent=2))
    return 0


def _batch_score(settings: Settings, args: argparse.Namespace) -> int:
    """The batch-score flow in this process, a progress bar over its input files while it runs."""
    import threading

    from rich.progress import Progress

    from flows.batch import batch_score_flow, finished_outputs
    from models import batch

    files = batch.input_files(args.source)
    names = batch.output_names(files)
    done, began = threading.Event(), time.time() - 1

    def follow(progress: Progress) -> None:
        task = progress.add_task(f"scoring {len(files)} file(s)", total=len(files))
        while not done.wait(0.5):
            progress.update(task, completed=finished_outputs(args.output, names.values(), began))
        progress.update(task, completed=finished_outputs(args.output, names.values(), began))

    with Progress(transient=False) as progress:
        watcher = threading.Thread(target=follow, args=(progress,), daemon=True)
        watcher.start()
        try:
            state = batch_score_flow(
                args.source,
                args.output,
                alias=args.alias,
                version=args.version,
                on_skew=args.on_skew,
                chunk_rows=args.chunk_rows,
                return_state=True,
            )
        finally:
            done.set()
            watcher.join()
    result = state.result(raise_on_failure=False)
    print(json.dumps(result, indent=2, default=str))
    if state.is_failed():
        print(f"» batch-score: {state.message}", file=sys.stderr)
        return 1
    return 0


def _traffic(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from flows.traffic import plan_traffic, replay
    from models import datasets

    spec = datasets.get_spec(args.dataset)
    holdout = datasets.split(datasets.load_frame(datasets.demo_source(spec.name)), spec).holdout
    planned = plan_traffic(holdout, spec, args.rows, args.shift, args.balance, seed=args.seed)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    sent = replay(
        args.url or settings.serve_url,
        planned,
        spec,
        Path(args.labels_out),
        args.batch,
        api_key,
        model_name=settings.model_name,
    )
    print(f"sent {len(planned)} rows in {sent} requests; labels in {args.labels_out}")
    return 0


def _fault(settings: Settings, args: argparse.Namespace) -> int:
    from flows.faults import register_broken_version
    from flows.gateway import gateway
    from models.registry import CHAMPION

    registry = gateway(settings)
    base = args.base or registry.alias(CHAMPION)
    if base is None:
        print("no champion to copy; run the pipeline first")
        return 1
    version = register_broken_version(registry.client, settings, base, args.kind)
    print(f"registered v{version}: v{base} with a {args.kind} ONNX model (tag fault.injected)")
    print(f"deploy it to watch the rollback: mlops promote {version} --by you --reason 'fault drill'")
    return 0


def _trace(settings: Settings, args: argparse.Namespace) -> int:
    from flows import trace
    from flows.tracking import connect

    found = trace.collect(settings, args.request_id, connect(settings))
    print(found.to_json() if args.json else "\n".join(trace.lines(found)))
    return 0 if found.found else 1


def _card(settings: Settings, args: argparse.Namespace) -> int:
    from flows import card
    from flows.tracking import connect

    published = card.regenerate(connect(settings), settings, args.version, args.reason)
    print(published.text)
    print(f"\n» logged as {published.uri}", file=sys.stderr)
    return 0


def _verify_log(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from models.log_audit import log_dirs, verify_all

    audits = verify_all([Path(d) for d in args.dir] or log_dirs(settings))
    if not audits:
        print("» verify-log: no log folder found", file=sys.stderr)
        return 1
    for audit in audits:
        print("\n".join(audit.lines()))
    return 0 if all(audit.ok for audit in audits) else 1


def _maintain_log(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from models.log_audit import log_dirs, maintain

    for directory in [Path(d) for d in args.dir] or log_dirs(settings):
        if directory.is_dir():
            print(maintain(directory, compact_after_days=settings.log_compact_after_days,
                           retention_days=settings.log_retention_days, now=time.time()).line())  # fmt: skip
    return 0


def use_state_dir_for_prefect(settings: Settings) -> None:
    """Without a Prefect server configured, keep Prefect's local database under the state folder too.

    Called at the entry point, before Prefect is imported, because Prefect reads its settings then.
    """
    if "PREFECT_API_URL" in os.environ or "PREFECT_HOME" in os.environ:
        return
    home = settings.state_path / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Should Prefect start its own temporary server anyway (a flow called from Python), not with its 20 s.
    os.environ.setdefault(
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", f"{settings.prefect_start_timeout_s:.0f}"
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mlops", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="train, gate, promote and serve the demo model; print a prediction")
    commands.add_parser(
        "stack",
        help="Prefect and MLflow servers with UIs, a worker, the deployments, the service (Ctrl-C stops)",
    )
    run = commands.add_parser("run", help="run the training pipeline once")
    run.add_argument("--dataset", default="breast_cancer", help="dataset spec (models/datasets.py)")
    run.add_argument("--data-source", help="CSV/Parquet path; default: the bundled demo:<dataset>")
    run.add_argument("--recipe", default="logistic_regression", help="recipe (models/recipes.py)")
    run.add_argument("--gate", help='gate thresholds as JSON, e.g. \'{"metric_floors": {"r2": 0.9}}\'')
    run.add_argument("--promotion", choices=["auto", "approval", "none"], default="auto")
    run.add_argument("--deploy", choices=["local", "none"], default="local")
    promote = commands.add_parser("promote", help="promote a named version to champion")
    promote.add_argument("version")
    promote.add_argument("--by", required=True, help="who decides (recorded on the version)")
    promote.add_argument("--reason", required=True)
    promote.add_argument("--force", action="store_true", help="even if it failed the gate (recorded)")
    promote.add_argument("--deploy", choices=["local", "none"], default="local")
    for name, helptext in (("deploy", "deploy the champion and prove it serves"), ("rollback", "roll back")):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--by", required=True, help="who asks (recorded)")
        sub.add_argument("--target", choices=["local", "fleet"], default="local")
        sub.add_argument("--replica", action="append", default=[], help="replica URL (fleet), repeatable")
        if name == "rollback":
            sub.add_argument("--reason", required=True)
            sub.add_argument("--to", help="version to roll back to (default: the previous live one)")
    fault = commands.add_parser("fault", help="register a version that breaks at serve time, on purpose")
    fault.add_argument("kind", choices=["unloadable", "wrong_outputs", "slow"])
    fault.add_argument("--base", help="version to copy (default: the champion)")
    monitor = commands.add_parser("monitor", help="drift and live quality over a window of the inference log")
    monitor.add_argument("--version", help="default: the champion")
    monitor.add_argument("--minutes", type=float, default=60)
    monitor.add_argument("--labels", help="CSV/Parquet with request_id,row,label")
    monitor.add_argument("--retrain", action="store_true", help="start the training deployment on a breach")
    traffic = commands.add_parser("traffic", help="replay held-out rows against the endpoint, maybe drifted")
    traffic.add_argument("--dataset", default="breast_cancer")
    traffic.add_argument("--rows", type=int, default=1000)
    traffic.add_argument("--batch", type=int, default=1, help="rows per request")
    traffic.add_argument(
        "--shift", action="append", default=[], help="feature:+2sd | feature:*1.3 | feature:=x"
    )
    traffic.add_argument("--balance", help="label:<class>=<share>, e.g. label:1=0.9")
    traffic.add_argument("--labels-out", default=".mlops/traffic-labels.csv")
    traffic.add_argument("--url", help="default: the local service")
    traffic.add_argument("--seed", type=int, default=0)
    batch_score = commands.add_parser(
        "batch-score", help="score a CSV/Parquet file, folder or glob with the served model, into Parquet"
    )
    batch_score.add_argument("source", help="file, folder or glob; local or any fsspec URL")
    batch_score.add_argument("output", help="folder for the Parquet output (the input's layout kept)")
    batch_score.add_argument("--alias", default="champion")
    batch_score.add_argument("--version", help="a version number instead of the alias")
    batch_score.add_argument("--on-skew", choices=["warn", "fail"], default="warn")
    batch_score.add_argument("--chunk-rows", type=int, help="default: MLOPS_BATCH_CHUNK_ROWS")
    split = commands.add_parser(
        "split", help="the canary's and the shadow's versions and shares of traffic (no option: show them)"
    )
    split.add_argument("--canary-version", help="the version that answers a share of requests")
    split.add_argument("--canary", type=float, help="percent of requests the canary answers, 0-100")
    split.add_argument("--shadow-version", help="the version that gets copies of requests, never answering")
    split.add_argument("--shadow", type=float, help="percent of requests copied to the shadow, 0-100")
    split.add_argument("--clear", action="store_true", help="both shares to 0, then both roles' aliases go")
    split.add_argument("--by", default=os.environ.get("USER", "cli"), help="who sets it (recorded)")
    split.add_argument("--reason", default="set from the command line", help="why (recorded)")
    trace = commands.add_parser(
        "trace", help="from a request id to the version, run, data, checks and decisions behind the answer"
    )
    trace.add_argument("request_id", help="the x-request-id of an answer (or a batch id)")
    trace.add_argument("--json", action="store_true", help="JSON instead of text")
    card = commands.add_parser(
        "card", help="regenerate a version's technical documentation (Annex IV) from the registry; print it"
    )
    card.add_argument("version")
    card.add_argument("--reason", default="asked for from the command line", help="recorded in it")
    verify = commands.add_parser(
        "verify-log", help="check the inference and feedback logs' hash chains; name the first broken record"
    )
    verify.add_argument("--dir", action="append", default=[], help="a log folder (default: both logs)")
    maintain = commands.add_parser(
        "maintain-log", help="compact old log segments into Parquet and delete what is past retention"
    )
    maintain.add_argument("--dir", action="append", default=[], help="a log folder (default: both logs)")
    commands.add_parser("stop", help="stop the local serving process")
    status = commands.add_parser("status", help="aliases, what each replica serves, the last deployments")
    status.add_argument("--replica", action="append", default=[], help="replica URL, repeatable")
    return root


@contextlib.contextmanager
def prefect_api(settings: Settings, command: str) -> Iterator[TemporaryServer | None]:
    """A temporary Prefect server for a flow command when none is configured (``PREFECT_API_URL``)."""
    if command not in FLOW_COMMANDS or os.environ.get("PREFECT_API_URL"):
        yield None
        return
    from flows.prefect_server import temporary_server

    with temporary_server(settings) as server:
        yield server


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings()
    if args.command == "stack":
        return _stack(settings)
    use_state_dir_for_prefect(settings)
    from flows.processes import StartupError

    try:
        with prefect_api(settings, args.command) as prefect:
            if prefect is not None and args.command != "demo":
                prefect.wait_ready()
            return dispatch(settings, args, prefect)
    except StartupError as exc:
        print(f"» {args.command}: {exc}", file=sys.stderr)
        return 1


def dispatch(settings: Settings, args: argparse.Namespace, prefect: TemporaryServer | None) -> int:
    if args.command == "demo":
        return _demo(settings, prefect)
    if args.command == "run":
        return _run(settings, args)
    if args.command == "promote":
        return _promote(settings, args)
    if args.command == "deploy":
        return _deploy(args)
    if args.command == "rollback":
        return _rollback(args)
    if args.command == "monitor":
        return _monitor(args)
    if args.command == "traffic":
        return _traffic(settings, args)
    if args.command == "fault":
        return _fault(settings, args)
    if args.command == "batch-score":
        return _batch_score(settings, args)
    if args.command == "stop":
        return _stop(settings)
    if args.command == "split":
        return _split(settings, args)
    if args.command == "card":
        return _card(settings, args)
    if args.command == "trace":
        return _trace(settings, args)
    if args.command == "verify-log":
        return _verify_log(settings, args)
    if args.command == "maintain-log":
        return _maintain_log(settings, args)
    return _status(settings, args.replica)


if __name__ == "__main__":
    sys.exit(main())
