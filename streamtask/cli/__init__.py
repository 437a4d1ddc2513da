"""The ``streamtask`` command line.

Every option can also be set from an environment variable (shown in ``--help``); this is the
only place that reads the environment. :func:`main` is the one place errors are formatted:

- a wrong command line (unknown option, missing argument, a value out of range, NaN or
  infinity for a number) is one line naming the problem and the ``--help`` to read, exit 2;
- streamtask's own errors are one line, exit 1 (3 and 4 are verdicts some commands give);
- any other error (a bug) is one line too, exit 1; its traceback goes to the log at DEBUG
  level (``--log-level DEBUG``).

Under a command that set up logging (``worker``), the line is a log record
(``command.failed``), so that a JSON log stays one object per line.

Signals: SIGTERM stops a command as Ctrl-C does (the stack unwinds, clients close). A
command that runs until stopped (``worker`` drains, ``ui``, ``status --watch``) then exits
0; a finite one cut short exits 130 after Ctrl-C and 143 after SIGTERM.
"""

from __future__ import annotations

import importlib
import logging
import signal as signals
import sys
from types import FrameType, ModuleType
from typing import Any

import typer

from streamtask import logs
from streamtask.cli.acls import acls_app
from streamtask.cli.bench import bench
from streamtask.cli.demo import demo
from streamtask.cli.dlq import dlq_app
from streamtask.cli.kafka import kafka_app
from streamtask.cli.options import refuse_non_finite_numbers
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


INTERRUPTED = 130
"""Exit code of a finite command cut short by Ctrl-C (128 + SIGINT)."""


class _Interrupts:
    """The handler of SIGTERM (and of SIGINT, unless the process was started ignoring it)
    for every command that sets none of its own: it raises KeyboardInterrupt, so SIGTERM
    unwinds exactly as Ctrl-C does, and it remembers which signal came.

    What a command raises once interrupted is a consequence, not a failure to report: the
    Kafka client can turn a KeyboardInterrupt raised inside its callbacks into a bare
    SystemError, which read as a fatal producer error."""

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> None:
        signals.signal(signals.SIGTERM, self)
        if signals.getsignal(signals.SIGINT) is signals.default_int_handler:
            signals.signal(signals.SIGINT, self)

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum
        raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point: run the command, and end every failure as one line."""
    interrupts = _Interrupts()
    interrupts.install()
    # The Kafka clients' own chatter (a broker still loading, a refused connection) reaches
    # the log only where a command set one up (worker, ui); elsewhere each failure that
    # matters ends the command as its one line, and the chatter would only bury it.
    logging.getLogger("streamtask.kafka").addHandler(logging.NullHandler())
    command = typer.main.get_command(app)
    refuse_non_finite_numbers(command)
    code = _run(command, interrupts)
    if code == INTERRUPTED and interrupts.received is not None:
        code = 128 + interrupts.received
    sys.exit(code)


def _run(command: Any, interrupts: _Interrupts) -> int:
    """Run the command; its exit code, every failure mapped to one line (see the module)."""
    click = _click_exceptions()
    try:
        code = command.main(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:  # a bare group: its help, as before
        typer.echo(exc.format_message())
        return int(exc.exit_code)
    except click.UsageError as exc:
        _fail(_usage_line(exc), exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except typer.Abort:  # standard input ended while a command waited on it
        _fail("aborted: standard input ended")
    except KeyboardInterrupt:  # after the command's own clean-up ran
        return INTERRUPTED
    except Exception as exc:
        if interrupts.received is not None:  # the interrupt's consequence, see _Interrupts
            return INTERRUPTED
        _fail(_failure(exc))
    return code if isinstance(code, int) else 0


def _failure(exc: Exception) -> str:
    """streamtask's own error as it is; any other (a bug) named, its traceback in the
    debug log."""
    if isinstance(exc, StreamtaskError):
        return str(exc)
    logging.getLogger("streamtask").debug("crashed", exc_info=True)
    return f"unexpected {describe(exc)} (a bug; --log-level DEBUG shows the traceback)"


def _click_exceptions() -> ModuleType:
    """The exceptions of the click typer parses with: its own copy in recent versions."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # typer < 0.2x uses click itself
        return importlib.import_module("click.exceptions")


def _usage_line(exc: Any) -> str:
    """click's message without its multi-line usage block, and where to read more."""
    message = " ".join(exc.format_message().split())
    if exc.ctx is None:
        return message
    return f"{message} (see: {exc.ctx.command_path} --help)"


def _fail(message: str, code: int = 1) -> None:
    """End the command with one line: a log record if logging is set up, else plain text."""
    if logs.configured():
        logging.getLogger("streamtask").error(
            "error: %s", message,
            extra={"event": "command.failed", "fields": {"error": message}})
    else:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(code)
