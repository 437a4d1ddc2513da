"""``streamtask dlq ls|show|replay``: inspect dead letters and send them back to their stage."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from streamtask.cli.options import AppRef, Bootstrap, open_app
from streamtask.errors import ConfigurationError
from streamtask.kafka.clients import wait_for_cluster
from streamtask.kafka.headers import DeadLetterRecord
from streamtask.model.app import App, Stage
from streamtask.ops import deadletters as dlq

dlq_app = typer.Typer(
    help="Inspect dead-letter queues and replay dead letters into their stage.",
    no_args_is_help=True,
)

StageArg = Annotated[str, typer.Argument(
    metavar="STAGE", help="The stage whose dead letters to use.")]
MESSAGE_WIDTH = 60


def _when(epoch_ms: int) -> str:
    """Local time of an epoch-ms timestamp, to the second ("-" when unknown)."""
    if not epoch_ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_ms / 1000))


def _short(text: str, width: int = MESSAGE_WIDTH) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


def _where(record: DeadLetterRecord) -> str:
    origin = record.origin
    return f"{origin.topic}[{origin.partition}]@{origin.offset}" if origin.topic else "-"


def _error(record: DeadLetterRecord, width: int = MESSAGE_WIDTH) -> str:
    """The error's type and message, without repeating the type the message starts with."""
    short_type = record.error_type.rsplit(".", 1)[-1]
    text = record.message if record.message.startswith(f"{short_type}:") else \
        f"{record.error_type}: {record.message}"
    return _short(text, width)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ConfigurationError(f"--limit {limit} must be at least 1")


def _stages(app: App, only: str | None) -> list[Stage]:
    return [app.get_stage(only)] if only else list(app.stages.values())


@dlq_app.command("ls")
def ls(
    app_ref: AppRef,
    stage: Annotated[str | None, typer.Option(
        "--stage", "-s", help="Only this stage (default: every stage of the app).")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", help="How many recent dead letters to list.")] = 10,
    bootstrap: Bootstrap = None,
) -> None:
    """Count each stage's dead letters and list the most recent ones."""
    _check_limit(limit)
    app = open_app(app_ref, bootstrap)
    stages = _stages(app, stage)
    wait_for_cluster(app.kafka)
    console = Console()
    console.print(_counts_table(dlq.counts(app, stages)))
    console.print(_recent_table(dlq.recent(app, stages, limit), limit))


def _counts_table(counts: list[dlq.StageCount]) -> Table:
    table = Table(title="dead letters per stage")
    for column in ("stage", "dlq topic", "dead letters", "parked"):
        table.add_column(column, justify="right" if column in ("dead letters", "parked")
                         else "left")
    for count in counts:
        table.add_row(count.stage, count.topic,
                      "missing" if count.dead is None else str(count.dead),
                      "-" if count.parked is None else str(count.parked))
    return table


def _recent_table(letters: list[dlq.DeadLetter], limit: int) -> Table:
    table = Table(title=f"most recent dead letters (up to {limit})")
    for column in ("stage", "task id", "reason", "error type", "message", "attempts",
                   "origin", "dead at"):
        table.add_column(column, no_wrap=column in ("task id", "origin"),
                         overflow="fold")
    for letter in letters:
        record = letter.record
        cells = (record.stage or "-", letter.task.id if letter.task else "-", record.reason,
                 record.error_type, _short(record.message), str(record.attempts),
                 _where(record), _when(record.dead_at))
        table.add_row(*map(Text, cells))  # Text: brackets in messages are not markup
    return table


@dlq_app.command("show")
def show(
    app_ref: AppRef,
    stage: StageArg,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", help="Show the N most recent dead letters.")] = 20,
    json_output: Annotated[bool, typer.Option(
        "--json", help="One JSON object per dead letter: every record field plus the task's.")]
        = False,
    bootstrap: Bootstrap = None,
) -> None:
    """Show a stage's recent dead letters: the decoded task and why it died."""
    _check_limit(limit)
    app = open_app(app_ref, bootstrap)
    target = app.get_stage(stage)
    wait_for_cluster(app.kafka)
    letters = dlq.recent(app, [target], limit)
    for letter in letters:
        typer.echo(_as_json(letter) if json_output else _describe(letter))
    if not letters and not json_output:
        typer.echo(f"no dead letters in {target.dlq_topic}", err=True)


def _as_json(letter: dlq.DeadLetter) -> str:
    """Every field of the record plus the task's; bytes as UTF-8 text (keys, headers) or hex."""
    record = letter.record
    out = asdict(record)
    out["key"] = _text(record.key)
    out["value"] = record.value.hex() if record.value is not None else None
    out["carried_headers"] = [[k, _text(v)] for k, v in record.carried_headers]
    with suppress(orjson.JSONDecodeError):  # not written by streamtask: keep the text
        out["errors"] = orjson.loads(record.errors) if record.errors else []
    out["dead_at_iso"] = _iso(record.dead_at)
    out["task_id"] = letter.task.id if letter.task else None
    out["task"] = letter.task.as_dict() if letter.task else None
    out["decodable"] = letter.task is not None
    out["problem"] = letter.problem
    return orjson.dumps(out, default=_jsonable).decode()


def _text(raw: str | bytes | None) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="backslashreplace")


def _iso(epoch_ms: int) -> str:
    """An epoch-ms time as ISO-8601 UTC, e.g. ``2026-01-31T12:00:00.000Z`` ("" for 0)."""
    if not epoch_ms:
        return ""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _value(record: DeadLetterRecord) -> str:
    if record.value_omitted is not None:
        return f"omitted ({record.value_omitted} bytes, too large for the dead letter)"
    if record.value is None:
        return "null"
    return f"{len(record.value)} bytes: {_preview(record.value)}"


def _preview(value: bytes, limit: int = 32) -> str:
    """A short, printable view of raw bytes for records that do not decode."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _describe(letter: dlq.DeadLetter) -> str:
    record = letter.record
    lines = [f"{record.dlq_topic}[{record.dlq_partition}]@{record.dlq_offset}  dead at "
             f"{_when(record.dead_at)}  reason {record.reason}  attempts {record.attempts}  "
             f"replays {record.replays}",
             f"  error   {_error(record, 200)}",
             f"  from    {_where(record)} (group {record.origin.group or '-'})"]
    task = letter.task
    if task is None:
        lines.append(f"  task    - ({letter.problem})")
        lines.append(f"  value   {_value(record)}")
    else:
        payload = orjson.dumps(task.payload, default=_jsonable).decode()
        lines.append(f"  task    {task.id} (key {task.key or '-'}, attempt {task.attempt}, "
                     f"created {_when(task.created_at)})")
        lines.append(f"  payload {_short(payload, 200)}")
    return "\n".join(lines)


REPLAY_HELP = (
    "Send matching dead letters back to the stage's input topic, with attempts reset to 1."
    "\n\n"
    "Progress is committed after each acknowledged batch to a consumer group named after the "
    "stage and the filters (--error-type, --since): rerunning the same command resumes after "
    "what was already replayed, and later picks up only new dead letters. A run stops at the "
    "end the DLQ had when it started. Records that do not decode are skipped and counted.")


@dlq_app.command("replay", help=REPLAY_HELP)
def replay(
    app_ref: AppRef,
    stage: StageArg,
    error_type: Annotated[str | None, typer.Option(
        "--error-type", help="Only dead letters of this error, by exact name or dotted "
                             "suffix (e.g. ValueError or myapp.errors.Timeout).")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only dead letters that died since this time: ISO-8601 "
                        "(2026-01-31T12:00:00Z; no zone = local) or relative (30s, 10m, 2h, "
                        "1d, 1w).")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Replay at most this many dead letters (a rerun continues).")] = None,
    rate: Annotated[float | None, typer.Option(
        "--rate", help="Replay at most this many records per second.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what would be replayed or parked; send and commit nothing.")]
        = False,
    max_replays: Annotated[int, typer.Option(
        "--max-replays", help="Loop guard: a dead letter already replayed this many times is "
                              "parked on <dlq topic>.parked instead.")] = 3,
    bootstrap: Bootstrap = None,
) -> None:
    """Send matching dead letters back to the stage's input topic (see REPLAY_HELP)."""
    options = dlq.ReplayOptions(dlq.Filter.build(error_type, since, time.time_ns() // 1_000_000),
                                limit, rate, dry_run, max_replays)
    app = open_app(app_ref, bootstrap)
    target = app.get_stage(stage)
    wait_for_cluster(app.kafka)  # an unreachable broker: its one line, without a progress bar
    verb = "would " if dry_run else ""
    with _progress() as bar:
        def on_record(outcome: dlq.Outcome, letter: dlq.DeadLetter) -> None:
            if dry_run or outcome is not dlq.Outcome.REPLAYED:
                typer.echo(_record_line(verb, outcome, letter))

        task = bar.add_task(f"replaying {target.dlq_topic}", total=None)
        summary = dlq.Replay(
            app, target, options, on_record=on_record,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        ).run()
    typer.echo(_summary_line(summary, dry_run))


@contextmanager
def _progress() -> Iterator[Progress]:
    """A progress bar on stderr; stdout lines print above it when stdout is the terminal
    too, and go untouched to a pipe otherwise. It goes away at the end: the summary (or
    the error) is the last line."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), refresh_per_second=4,
                  redirect_stdout=sys.stdout.isatty(), transient=True) as progress:
        yield progress


def _record_line(verb: str, outcome: dlq.Outcome, letter: dlq.DeadLetter) -> str:
    record = letter.record
    where = f"{record.dlq_topic}[{record.dlq_partition}]@{record.dlq_offset}"
    task_id = letter.task.id if letter.task else "-"
    if outcome is dlq.Outcome.UNDECODABLE:
        return f"undecodable  {where}  cannot be replayed: {_short(letter.problem or '', 120)}"
    if outcome is dlq.Outcome.PARKED:
        return (f"{verb}park  {task_id}  {where}  already replayed {record.replays} times "
                f"({_error(record)})")
    return f"{verb}replay  {task_id}  {where}  ({_error(record)})"


def _summary_line(summary: dlq.ReplaySummary, dry_run: bool) -> str:
    counts = summary.counts
    replayed, parked = ("would replay", "would park") if dry_run else ("replayed", "parked")
    line = (f"{replayed} {counts[dlq.Outcome.REPLAYED]}, "
            f"skipped (filter) {counts[dlq.Outcome.SKIPPED]}, "
            f"{parked} {counts[dlq.Outcome.PARKED]}, "
            f"undecodable {counts[dlq.Outcome.UNDECODABLE]}")
    if summary.stopped_at_limit:
        line += " (stopped at --limit; rerun to continue)"
    if dry_run:
        return f"dry run, nothing sent or committed: {line}"
    parked = f"; parked on {summary.parked_topic}" if counts[dlq.Outcome.PARKED] else ""
    return f"{line}{parked}; progress in consumer group {summary.group}"
