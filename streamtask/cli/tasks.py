"""``streamtask send`` and ``streamtask topics``: put work in, shape the topics."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from streamtask.cli.options import AppRef, Bootstrap, open_app
from streamtask.errors import ConfigurationError
from streamtask.kafka.clients import wait_for_cluster
from streamtask.kafka.topics import ensure

MAX_COUNT = 1_000_000
"""``send --count`` at most: every copy's acknowledgement is held until the end."""

topics_app = typer.Typer(help="Create and check an app's topics.", no_args_is_help=True)


def send(
    app_ref: AppRef,
    stage: Annotated[str, typer.Argument(help="The stage that receives the task.")],
    payload: Annotated[str, typer.Argument(
        help="The payload as JSON, e.g. '{\"photo_id\": \"p1\"}'.")],
    key: Annotated[str | None, typer.Option(help="Partition key (default: the task id).")] = None,
    count: Annotated[int, typer.Option(
        min=1, max=MAX_COUNT, help="Send this many copies.")] = 1,
    delay: Annotated[float | None, typer.Option(
        min=0, help="Seconds the task(s) wait before they may run (on a retry level).")
    ] = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Send task(s) to a stage and wait until the broker acknowledged them."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"payload is not valid JSON: {exc}") from exc
    app = open_app(app_ref, bootstrap)
    app.get_stage(stage)
    wait_for_cluster(app.kafka)
    with app.producer() as producer:
        futures = [producer.send(stage, value, key=key, delay=delay) for _ in range(count)]
    for future in futures:
        sent = future.result()
        typer.echo(f"{sent.task_id} -> {sent.topic}[{sent.partition}]@{sent.offset}")


@topics_app.command("ensure")
def topics_ensure(app_ref: AppRef, bootstrap: Bootstrap = None) -> None:
    """Create every missing topic of the app; report drift that cannot be fixed in place."""
    report = ensure(open_app(app_ref, bootstrap))
    for name in report.created:
        typer.echo(f"created   {name}")
    for name in report.unchanged:
        typer.echo(f"ok        {name}")
    for line in report.drift:
        typer.echo(f"drift     {line}")
    if report.drift:
        raise typer.Exit(4)
