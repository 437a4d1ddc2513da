"""``streamtask status``: each stage's backlog, retries, dead letters, workers and verdict."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamtask.cli.options import AppRef, Bootstrap, open_app
from streamtask.errors import ConfigurationError
from streamtask.model.app import App, Stage
from streamtask.ops import status as st

MAX_WINDOW = 86_400.0
"""``--window`` at most: a day (a larger one overflowed the clock arithmetic)."""
STUCK_EXIT = 3
"""Exit code when a stage is stuck, or has tasks waiting and no worker."""
COLOURS = {st.Verdict.HEALTHY: "green", st.Verdict.BACKLOG_GROWING: "yellow",
           st.Verdict.STUCK: "bold red", st.Verdict.NO_WORKERS: "red"}


def _stages(app: App, only: list[str] | None) -> list[Stage]:
    return [app.get_stage(name) for name in only] if only else list(app.stages.values())


def _retry_cell(levels: list[st.RetryLevel]) -> str:
    if not levels:
        return "-"
    return "\n".join(f"{level.topic.rsplit('.', 1)[-1]}: {level.due_now} due, "
                     f"{level.waiting} waiting" for level in levels)


def render(statuses: list[st.StageStatus]) -> Group:
    """The stages table and, below it, the workers of each stage's groups."""
    stages = Table(title="stages", title_justify="left")
    for column in ("stage", "verdict", "input lag (worst partition)", "retry levels",
                   "DLQ (last hour)", "pending forks", "workers", "committed/s", "why"):
        stages.add_column(column)
    workers = Table(title="workers", title_justify="left")
    for column in ("stage", "group", "member id", "host", "partitions"):
        workers.add_column(column)
    for s in statuses:
        worst = f" (p{s.worst_partition}: {s.worst_lag})" if s.worst_partition is not None else ""
        hosts = len({m.client_id for m in s.members})
        stages.add_row(s.stage, Text(s.verdict.value, style=COLOURS[s.verdict]),
                       f"{s.lag}{worst}", _retry_cell(s.retry),
                       f"{s.dlq_size} (+{s.dlq_last_hour})",
                       "-" if s.pending_forks is None else str(s.pending_forks), str(hosts),
                       f"{s.committed_per_second:g}", s.reason)
        for m in s.members:
            workers.add_row(s.stage, m.group, m.member_id, m.host, ", ".join(m.partitions))
    return Group(stages, workers)


def status(
    app_ref: AppRef,
    stage: Annotated[list[str] | None, typer.Option(
        "--stage", "-s", help="Only this stage (repeatable); default: every stage.")] = None,
    window: Annotated[float, typer.Option(
        max=MAX_WINDOW, envvar="STREAMTASK_STATUS_WINDOW",
        help="Seconds between the two looks a verdict compares: a stage with waiting work "
             "whose committed offsets did not move in this time is stuck.")] = 5.0,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="Redraw every --window seconds until Ctrl-C.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
    bootstrap: Bootstrap = None,
) -> None:
    """Per stage: input lag, retries due vs waiting, DLQ size and growth, workers, verdict.

    Exits with code 3 when a stage is stuck or has waiting tasks and no worker.
    """
    if window <= 0:
        raise ConfigurationError(f"--window {window} must be a positive number of seconds")
    if watch and as_json:
        raise ConfigurationError("--watch and --json do not combine; use one of them")
    app = open_app(app_ref, bootstrap)
    stages = _stages(app, stage)
    if watch:
        _watch(app, stages, window)
        return
    statuses = st.look(app, stages, window)
    if as_json:
        typer.echo(orjson.dumps({"app": app.name, "window": window,
                                 "stages": [s.to_json() for s in statuses]}).decode())
    else:
        Console().print(render(statuses))
    if any(st.is_failing(s) for s in statuses):
        raise typer.Exit(STUCK_EXIT)


def _watch(app: App, stages: list[Stage], window: float) -> None:
    inspector = st.Inspector(app, stages)
    try:
        before = inspector.sample()
        with Live(Text(f"first look in {window:g}s..."), auto_refresh=False) as live:
            while True:
                time.sleep(window)
                after = inspector.sample(forks=True)
                live.update(render([st.stage_status(s, before[s.name], after[s.name])
                                    for s in stages]), refresh=True)
                before = after
    except KeyboardInterrupt:
        pass
    finally:
        inspector.close()
