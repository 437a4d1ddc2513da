"""``streamtask demo``: the main job, end to end on a local broker."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from streamtask.config import load_kafka_settings
from streamtask.dev.broker import DEFAULT_DATA_DIR, DEFAULT_PORT, LocalBroker
from streamtask.dev.demo import run_demo, summary_line, summary_table
from streamtask.kafka.clients import cluster_is_reachable, wait_for_cluster


def demo(
    uploads: Annotated[int, typer.Option(min=1, help="Photos the service uploads.")] = 500,
    bootstrap: Annotated[str | None, typer.Option(
        "--bootstrap", "-b", envvar="STREAMTASK_BOOTSTRAP",
        help="Use this broker instead of starting the local one.")] = None,
    keep_broker: Annotated[bool, typer.Option(
        help="Leave the local broker running afterwards.")] = False,
) -> None:
    """Run the photo-upload pipeline end to end, with injected failures, live progress per
    stage and a summary: resize -> filter -> scan -> (notify_followers | update_feeds)."""
    console = Console(stderr=True)
    logging.getLogger("streamtask.kafka").setLevel(logging.ERROR)  # transient client chatter
    # The progress bars count the injected retries; a warning line for each one scrolled
    # them off the screen. Dead letters (errors) are still shown as they happen.
    logging.getLogger("streamtask.worker").setLevel(logging.ERROR)
    broker = None
    if bootstrap is None:
        local = LocalBroker(DEFAULT_DATA_DIR, port=DEFAULT_PORT)
        bootstrap = local.bootstrap
        if not local.status().running and not cluster_is_reachable(bootstrap, 2.0):
            console.print(f"starting a local Kafka broker on {bootstrap} "
                          "(first run fetches its jars from Maven Central)...")
            local.up()
            broker = local
    else:  # a given broker that does not answer: one line, before any other
        wait_for_cluster(load_kafka_settings(bootstrap=bootstrap))
    console.print(f"broker {bootstrap}: sending {uploads} uploads through 3 stages")
    try:
        result = run_demo(bootstrap, uploads, console)
    finally:
        if broker is not None and not keep_broker:
            broker.down()
    out = Console()
    out.print(summary_table(result))
    out.print(summary_line(result))
    if result.run_id:
        out.print(f"inspect one run: streamtask runs show {result.app} {result.run_id} "
                  f"--bootstrap {bootstrap}")
    if broker is None or keep_broker:  # the broker stays up: its dead letters can be browsed
        where = "" if bootstrap == f"127.0.0.1:{DEFAULT_PORT}" else f" --bootstrap {bootstrap}"
        console.print(f"browse it (pipeline, dead letters, runs): streamtask ui "
                      f"streamtask.dev.demo:app{where}")
    if not result.done():
        raise typer.Exit(1)
