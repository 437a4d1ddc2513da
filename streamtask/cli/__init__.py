"""The ``streamtask`` command line.

Every option can also be set from an environment variable (shown in ``--help``); this is the
only place that reads the environment. streamtask's own errors end the command with a
one-line message and exit code 1 instead of a traceback. So does any other error (a bug):
its traceback goes to the log at DEBUG level (``--log-level DEBUG``). Under a command that
set up logging (``worker``), the line is a log record (``command.failed``), so that a JSON
log stays one object per line.
"""

from __future__ import annotations

import logging
import sys

import typer

from streamtask import logs
from streamtask.cli.acls import acls_app
from streamtask.cli.bench import bench
from streamtask.cli.demo import demo
from streamtask.cli.dlq import dlq_app
from streamtask.cli.kafka import kafka_app
from streamtask.cli.pipeline import graph, pipeline_app
from streamtask.cli.runs import runs_app
from streamtask.cli.signal import signal
from streamtask.cli.status import status
from streamtask.cli.tasks import send, topics_app
from streamtask.cli.ui import ui
from streamtask.cli.worker import worker
from streamtask.cli.workflow import workflow_app
from streamtask.errors import StreamtaskError
from streamtask.kafka.headers import describe

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
app.add_typer(runs_app, name="runs")
app.add_typer(acls_app, name="acls")
app.add_typer(workflow_app, name="workflow")
app.command()(worker)
app.command()(send)
app.command()(demo)
app.command()(bench)
app.command()(graph)
app.command()(status)
app.command()(ui)
app.command()(signal)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except StreamtaskError as exc:
        _fail(str(exc))
    except Exception as exc:  # a bug: one line here, the traceback in the debug log
        logging.getLogger("streamtask").debug("crashed", exc_info=True)
        _fail(f"unexpected {describe(exc)} (a bug; --log-level DEBUG shows the traceback)")


def _fail(message: str) -> None:
    """End the command with one line: a log record if logging is set up, else plain text."""
    if logs.configured():
        logging.getLogger("streamtask").error(
            "error: %s", message,
            extra={"event": "command.failed", "fields": {"error": message}})
    else:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(1)
