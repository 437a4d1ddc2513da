"""Options shared by several commands (each also readable from an environment variable)."""

from __future__ import annotations

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
