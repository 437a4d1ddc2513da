"""Options shared by several commands (each also readable from an environment variable)."""

from __future__ import annotations

from typing import Annotated

import typer

from streamtask.app import App
from streamtask.config import KafkaSettings
from streamtask.loading import load_app

AppRef = Annotated[str, typer.Argument(
    metavar="APP_REF", help="The app to use, as module:attribute (e.g. photos_app:app).",
    envvar="STREAMTASK_APP")]
Bootstrap = Annotated[str | None, typer.Option(
    "--bootstrap", "-b", envvar="STREAMTASK_BOOTSTRAP",
    help="Kafka bootstrap servers (default: the app's, else 127.0.0.1:9092).")]


def open_app(reference: str, bootstrap: str | None) -> App:
    """Load the app and point it at ``bootstrap`` when one was given."""
    app = load_app(reference)
    if bootstrap:
        app.kafka = KafkaSettings(bootstrap=bootstrap, extra=app.kafka.extra,
                                  connect_timeout=app.kafka.connect_timeout)
    return app
