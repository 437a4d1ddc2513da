"""The ``streamtask`` command line.

Every option can also be set from an environment variable (shown in ``--help``); this is the
only place that reads the environment. streamtask's own errors end the command with a
one-line message and exit code 1 instead of a traceback.
"""

from __future__ import annotations

import sys

import typer

from streamtask.cli.bench import bench
from streamtask.cli.demo import demo
from streamtask.cli.dlq import dlq_app
from streamtask.cli.kafka import kafka_app
from streamtask.cli.pipeline import graph, pipeline_app
from streamtask.cli.signal import signal
from streamtask.cli.tasks import send, topics_app
from streamtask.cli.worker import worker
from streamtask.cli.workflow import workflow_app
from streamtask.errors import StreamtaskError

app = typer.Typer(
    name="streamtask",
    help="A Kafka-native task processor: send Avro tasks, run stage workers, manage topics.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(dlq_app, name="dlq")
app.add_typer(workflow_app, name="workflow")
app.command()(worker)
app.command()(send)
app.command()(demo)
app.command()(bench)
app.command()(graph)
app.command()(signal)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except StreamtaskError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
