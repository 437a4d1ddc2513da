"""Options shared by several commands (each also readable from an environment variable)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import orjson
import typer

from streamtask.config import load_kafka_settings
from streamtask.errors import ConfigurationError
from streamtask.loading import load_app
from streamtask.model.app import App

AppRef = Annotated[str, typer.Argument(
    metavar="APP_REF", help="The app to use, as module:attribute (e.g. photos_app:app).",
    envvar="STREAMTASK_APP")]
Bootstrap = Annotated[str | None, typer.Option(
    "--bootstrap", "-b", envvar="STREAMTASK_BOOTSTRAP", show_envvar=True,
    help="Kafka bootstrap servers (default: the app's, else 127.0.0.1:9092). Security "
         "settings come from STREAMTASK_SECURITY_PROTOCOL, STREAMTASK_SASL_* and "
         "STREAMTASK_SSL_* or streamtask.toml (see README, Configuration).")]


def open_app(reference: str, bootstrap: str | None) -> App:
    """Load the app and apply the deployment's Kafka settings over the app's own: the config
    file, then the environment, then ``--bootstrap`` when one was given."""
    app = load_app(reference)
    app.kafka = load_kafka_settings(base=app.kafka, bootstrap=bootstrap)
    return app


def json_object(text: str, option: str, what: str) -> dict[str, Any]:
    """``text``, the value of ``option``, parsed as a JSON object (``what`` it holds, for the
    message): anything else is a one-line :class:`ConfigurationError`."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{option} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigurationError(f"{option} must be a JSON object ({what})")
    return value



def refuse_non_finite_numbers(command: Any) -> None:
    """Make every option and argument of ``command`` (a click command, as typer builds it)
    and of its subcommands refuse NaN and infinity. Both parse as floats and pass range
    checks (NaN compares false), then sleep forever, never commit, or overflow deep in a
    command: one rule for every command, present and future, instead of a check in each."""
    for param in command.params:
        param.callback = _finite(param.callback)
    for sub in getattr(command, "commands", {}).values():
        refuse_non_finite_numbers(sub)


def _finite(callback: Callable[..., Any] | None) -> Callable[..., Any]:
    def check(ctx: Any, param: Any, value: Any) -> Any:
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, float) and not math.isfinite(item):
                raise typer.BadParameter(f"{item} is not a finite number", ctx=ctx,
                                         param=param)
        return value if callback is None else callback(ctx, param, value)
    return check
