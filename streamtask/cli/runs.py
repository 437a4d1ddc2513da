"""``streamtask runs show|ls``: what happened to a run, from its execution trail in Kafka."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from streamtask.cli.options import Bootstrap, open_app
from streamtask.config import load_kafka_settings
from streamtask.errors import ConfigurationError, KafkaError
from streamtask.kafka.clients import wait_for_cluster
from streamtask.kafka.topics import EVENTS_RETENTION_MS
from streamtask.model.app import App
from streamtask.ops import trail
from streamtask.ops.deadletters import parse_since

runs_app = typer.Typer(help="Inspect runs from their execution trail (<app>.events).",
                       no_args_is_help=True)

AppArg = Annotated[str, typer.Argument(
    metavar="APP", envvar="STREAMTASK_APP",
    help="The app, as module:attribute, or just its name (e.g. photos).")]
OUTCOME_STYLE = {"succeeded": "green", "failed": "yellow", "timed_out": "yellow"}


def _app(reference: str, bootstrap: str | None) -> App:
    """The app, or (for a bare name) an app of that name: the trail needs only the name.
    Its cluster answered (else one line naming the address, not the client's log)."""
    if ":" in reference:
        app = open_app(reference, bootstrap)
    else:
        app = App(reference, kafka=load_kafka_settings(bootstrap=bootstrap))
    wait_for_cluster(app.kafka)
    return app


def _clock(epoch_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_ms / 1000)) + f".{epoch_ms % 1000:03d}"


def _label(task: trail.TaskTrail) -> Text:
    label = Text(f"{task.stage} ", style="bold")
    label.append(task.task_id[:12], style="dim")
    for attempt in task.attempts:
        style = OUTCOME_STYLE.get(attempt.outcome, "")
        label.append(f"\n  #{attempt.attempt} {attempt.outcome} {_clock(attempt.started)} "
                     f"{attempt.ended - attempt.started} ms", style=style)
        if attempt.error:
            label.append(f" ({attempt.error[:80]})", style=style)
    if task.dead_letter is not None:
        label.append(f"\n  dead-lettered: {task.dead_letter[:100]}", style="bold red")
    return label


def _add(node: Tree, task: trail.TaskTrail) -> None:
    branch = node.add(_label(task))
    for child in task.children:
        _add(branch, child)


@runs_app.command("show")
def show(
    app_ref: AppArg,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The tree as JSON.")] = False,
    bootstrap: Bootstrap = None,
) -> None:
    """A run's tasks as a tree by parent: attempts, timings, dead letters (in red)."""
    app = _app(app_ref, bootstrap)
    events = trail.read_run(app, run_id)
    if not events:
        raise KafkaError(f"no events of run {run_id} in {trail.topic_of(app)} (the trail keeps "
                         f"{EVENTS_RETENTION_MS // 86_400_000} days)")
    roots = trail.tree(events)
    if as_json:
        typer.echo(orjson.dumps({"run_id": run_id, "tasks": [asdict(r) for r in roots]}).decode())
        return
    began = min(e["started"] for e in events)
    ended = max(e["ended"] for e in events)
    header = Tree(f"run {run_id}: {len({e['task_id'] for e in events})} tasks, started "
                  f"{_clock(began)}, last event after {ended - began} ms")
    for root in roots:
        _add(header, root)
    Console().print(header)


@runs_app.command("ls")
def ls(
    app_ref: AppArg,
    stage: Annotated[str | None, typer.Option(
        "--stage", "-s", help="Only runs with a task of this stage.")] = None,
    outcome: Annotated[str | None, typer.Option(
        help="Only runs with an event of this outcome: succeeded, failed, timed-out, "
             "retried, dead-lettered.")] = None,
    since: Annotated[str, typer.Option(
        help="How far back: 30m, 2h, 1d or an ISO time.")] = "1h",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1,
                                       help="The most recent runs to list.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run.")] = False,
    bootstrap: Bootstrap = None,
) -> None:
    """The runs of the last hour (or --since), newest last, with their outcomes."""
    wanted = outcome.replace("-", "_") if outcome else None
    if wanted is not None and wanted not in trail.OUTCOMES:
        raise ConfigurationError(f"--outcome {outcome!r}: use one of "
                                 f"{', '.join(o.replace('_', '-') for o in trail.OUTCOMES)}")
    since_ms = parse_since(since, time.time_ns() // 1_000_000)
    app = _app(app_ref, bootstrap)
    runs = _summaries(trail.read_since(app, since_ms))
    chosen = [run for run in runs.values()
              if (stage is None or stage in run["stages"])
              and (wanted is None or run["outcomes"].get(wanted))][-limit:]
    if as_json:
        for run in chosen:
            typer.echo(orjson.dumps(run).decode())
        return
    table = Table(title=f"runs of {app.name} since {since}")
    for column in ("run id", "started", "tasks", "stages", "outcomes"):
        table.add_column(column)
    for run in chosen:
        dead = run["outcomes"].get("dead_lettered")
        table.add_row(run["run_id"], _clock(run["started"]), str(run["tasks"]),
                      ", ".join(run["stages"]),
                      Text(", ".join(f"{n} {o}" for o, n in sorted(run["outcomes"].items())),
                           style="red" if dead else ""))
    Console().print(table)


def _summaries(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run (ordered by start): start time, task count, stages, outcome counts."""
    runs: dict[str, dict[str, Any]] = {}
    tasks: dict[str, set[str]] = {}
    for event in (event for record in records for event in record["events"]):
        run_id = event["run_id"]
        run = runs.setdefault(run_id, {"run_id": run_id, "started": 1 << 62, "tasks": 0,
                                       "stages": [], "outcomes": Counter()})
        run["started"] = min(run["started"], event["started"])
        tasks.setdefault(run_id, set()).add(event["task_id"])
        if event["stage"] not in run["stages"]:
            run["stages"].append(event["stage"])
        run["outcomes"][event["outcome"]] += 1
    for run_id, run in runs.items():
        run["tasks"] = len(tasks.get(run_id, ()))
        run["outcomes"] = dict(run["outcomes"])
    return dict(sorted(runs.items(), key=lambda item: item[1]["started"]))
