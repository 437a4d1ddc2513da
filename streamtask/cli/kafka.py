"""``streamtask kafka up|down|status``: the local development broker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from streamtask.broker import (
    DEFAULT_DATA_DIR,
    DEFAULT_PORT,
    KAFKA_VERSION,
    BrokerSecurity,
    LocalBroker,
)
from streamtask.errors import BrokerSetupError

kafka_app = typer.Typer(
    help=f"Run a local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) with plain java.",
    no_args_is_help=True,
)

DataDir = Annotated[Path, typer.Option(
    "--data-dir", envvar="STREAMTASK_DATA_DIR",
    help="Where the broker keeps its data, log and PID; it persists across down/up.")]


Security = Literal["none", "sasl-scram"]


@kafka_app.command()
def up(
    port: Annotated[int, typer.Option(
        "--port", envvar="STREAMTASK_KAFKA_PORT", min=1, max=65534,
        help="Client port on 127.0.0.1 (the controller listens on port + 1).")] = DEFAULT_PORT,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    security: Annotated[Security, typer.Option(
        "--security", help="sasl-scram: SCRAM-SHA-512 logins, ACLs enforced, an admin "
                           "super user whose settings go to DATA_DIR/admin.toml.")] = "none",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 90.0,
) -> None:
    """Start the broker (fetching its jars from Maven Central on first use); print its address."""
    broker = LocalBroker(data_dir, port=port)
    before = broker.status()
    if before.running:
        typer.echo(f"already running: {before.bootstrap} (pid {before.pid}, "
                   f"data {before.data_dir})", err=True)
        typer.echo(before.bootstrap)
        return
    _check_security(broker, security)
    if security == "sasl-scram" and broker.security is None:
        broker = LocalBroker(data_dir, port=port, security=BrokerSecurity.generate())
    typer.echo(f"starting Kafka {KAFKA_VERSION} on {broker.bootstrap} (data {broker.data_dir})...",
               err=True)
    status = broker.up(timeout=timeout)
    typer.echo(f"ready (pid {status.pid})", err=True)
    if broker.security is not None:
        typer.echo(f"SASL/SCRAM-SHA-512 with ACLs; the admin's settings are in "
                   f"{broker.admin_config}: export STREAMTASK_CONFIG={broker.admin_config}",
                   err=True)
    typer.echo(status.bootstrap)


def _check_security(broker: LocalBroker, security: Security) -> None:
    """A data dir keeps the security it was formatted with (SCRAM users live in it)."""
    formatted = (broker.data_dir / "kraft-logs" / "meta.properties").exists()
    if formatted and security == "sasl-scram" and broker.security is None:
        raise BrokerSetupError(
            f"{broker.data_dir} holds a broker created without security; use another "
            "--data-dir for a secured one")


@kafka_app.command()
def down(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Stop the broker this data dir started, with a controlled shutdown."""
    if LocalBroker(data_dir).down():
        typer.echo("stopped")
    else:
        typer.echo(f"no broker running for {Path(data_dir).expanduser()}")


@kafka_app.command()
def status(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Say whether the broker runs, where it listens, and where its data is."""
    state = LocalBroker(data_dir).status()
    if state.running:
        typer.echo(f"running: {state.bootstrap} (pid {state.pid}, data {state.data_dir})")
    else:
        typer.echo(f"stopped (data {state.data_dir})")
        raise typer.Exit(3)
