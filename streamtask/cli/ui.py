"""``streamtask ui``: serve the web console for an app (see :mod:`streamtask.ui`)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from streamtask.cli.options import Bootstrap
from streamtask.cli.pipeline import Target, open_target
from streamtask.config import KafkaSettings
from streamtask.errors import ConfigurationError
from streamtask.logs import configure
from streamtask.model.app import App


def _with_bootstrap(app: App, bootstrap: str | None) -> App:
    if bootstrap:
        app.kafka = KafkaSettings(bootstrap=bootstrap, extra=app.kafka.extra,
                                  connect_timeout=app.kafka.connect_timeout)
    return app


def _check_free(host: str, port: int) -> None:
    """One line now for a taken port or an unknown address, instead of uvicorn's log lines
    after the console started (and an exit code of its own)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise ConfigurationError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; "
                                 "choose another --port or --host") from None


def ui(
    target: Target,
    port: Annotated[int, typer.Option(
        min=1, max=65535, envvar="STREAMTASK_UI_PORT", help="Port to serve on.")] = 8080,
    host: Annotated[str, typer.Option(
        envvar="STREAMTASK_UI_HOST",
        help="Address to bind. Anything but a loopback address needs --token.")]
        = "127.0.0.1",
    read_only: Annotated[bool, typer.Option(
        "--read-only", envvar="STREAMTASK_UI_READ_ONLY",
        help="Turn off everything that changes something (replay, save).")] = False,
    token: Annotated[str | None, typer.Option(
        envvar="STREAMTASK_UI_TOKEN",
        help="Access token every request must carry (open the console once with "
             "?token=...). Required when binding beyond this machine.")] = None,
    workflow: Annotated[Path | None, typer.Option(
        help="A workflow definition (*.json) for the designer to open (default: TARGET "
             "when it is one).")] = None,
    status_interval: Annotated[float, typer.Option(
        min=0.5, help="Seconds between two looks of the status loop that colours the "
                      "pipeline (one loop for every viewer).")] = 5.0,
    designer_dir: Annotated[Path, typer.Option(
        help="Where the designer saves definitions.")] = Path("."),
    bootstrap: Bootstrap = None,
) -> None:
    """Serve the web console: the live pipeline, its dead letters (browse, replay), runs from
    the execution trail and a workflow designer. It runs no worker and changes nothing unless
    asked (replay, save)."""
    try:
        import uvicorn

        from streamtask.ui import ConsoleSettings, create_app
        from streamtask.ui.access import check_binding
    except ImportError as exc:
        raise ConfigurationError(f"the web console needs the ui extra ({exc.name} is "
                                 "missing): pip install 'streamtask[ui]'") from exc
    _check_free(host, port)
    check_binding(host, token)
    app = _with_bootstrap(open_target(target), bootstrap)
    if workflow is None and target.endswith(".json"):
        workflow = Path(target)
    if workflow is not None and not workflow.is_file():
        raise ConfigurationError(f"workflow file {str(workflow)!r} does not exist or is not a "
                                 "file")
    if not designer_dir.is_dir():
        raise ConfigurationError(f"--designer-dir {str(designer_dir)!r} is not a directory: "
                                 "create it or point at one")
    settings = ConsoleSettings(read_only=read_only, token=token,
                               designer_dir=designer_dir.resolve(), workflow=workflow,
                               status_interval=status_interval)
    configure()
    logging.getLogger("streamtask.ui").info(
        "console for app %s on http://%s:%d/ %s", app.name, host, port,
        "(read-only)" if read_only else "")
    # Open pipeline pages keep an event stream each: Ctrl-C must not wait for them to close.
    uvicorn.run(create_app(app, settings), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=2)
