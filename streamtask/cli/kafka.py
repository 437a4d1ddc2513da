"""``streamtask kafka up|down|status``: the local development broker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from streamtask.dev.broker import (
    DEFAULT_DATA_DIR,
    DEFAULT_PORT,
    KAFKA_VERSION,
    BrokerSecurity,
    LocalBroker,
)
from streamtask.dev.cluster import LocalCluster
from streamtask.errors import BrokerSetupError

kafka_app = typer.Typer(
    help=f"Run a local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) with plain java.",
    no_args_is_help=True,
)

DataDir = Annotated[Path, typer.Option(
    "--data-dir", envvar="STREAMTASK_DATA_DIR",
    help="Where the broker keeps its data, log and PID; it persists across down/up.")]


Security = Literal["none", "sasl-scram", "sasl-ssl"]


@kafka_app.command()
def up(
    port: Annotated[int, typer.Option(
        "--port", envvar="STREAMTASK_KAFKA_PORT", min=1, max=65534,
        help="Client port on 127.0.0.1 (the controller listens on port + 1; with --brokers N "
             "node i uses port + 2(i-1) and the port after it).")] = DEFAULT_PORT,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    brokers: Annotated[int, typer.Option(
        "--brokers", min=1, max=9, help="Nodes of a local KRaft cluster, each its own process "
                                        "and data dir (3: replication 3, min.insync.replicas "
                                        "2).")] = 1,
    security: Annotated[Security, typer.Option(
        "--security", help="sasl-scram: SCRAM-SHA-512 logins, ACLs enforced, an admin "
                           "super user whose settings go to DATA_DIR/admin.toml; sasl-ssl: "
                           "the same over TLS, with a throwaway CA in DATA_DIR/tls.")] = "none",
    timeout: Annotated[float, typer.Option(
        min=1, help="Seconds to wait for the broker.")] = 90.0,
) -> None:
    """Start the broker (fetching its jars from Maven Central on first use); print its address."""
    if brokers > 1 or LocalCluster.exists(data_dir):
        _up_cluster(data_dir, brokers, port, security, timeout)
        return
    broker = LocalBroker(data_dir, port=port)
    before = broker.status()
    if before.running:
        typer.echo(f"already running: {before.bootstrap} (pid {before.pid}, "
                   f"data {before.data_dir})", err=True)
        typer.echo(before.bootstrap)
        return
    _check_security(broker.data_dir / "kraft-logs", broker.security, security)
    if security != "none" and broker.security is None:
        broker = LocalBroker(data_dir, port=port,
                             security=_new_security(broker.data_dir, security))
    typer.echo(f"starting Kafka {KAFKA_VERSION} on {broker.bootstrap} (data {broker.data_dir})...",
               err=True)
    status = broker.up(timeout=timeout)
    typer.echo(f"ready (pid {status.pid})", err=True)
    _say_admin(broker.security, broker.admin_config)
    typer.echo(status.bootstrap)


def _up_cluster(data_dir: Path, brokers: int, port: int, security: Security,
                timeout: float) -> None:
    cluster = LocalCluster(data_dir, None if LocalCluster.exists(data_dir) else brokers, port)
    _check_security(cluster.nodes[1].data_dir / "kraft-logs", cluster.security, security)
    if security != "none" and cluster.security is None:
        cluster = LocalCluster(data_dir, brokers, port,
                               security=_new_security(cluster.data_dir, security))
    typer.echo(f"starting a {cluster.size}-broker Kafka {KAFKA_VERSION} cluster on "
               f"{cluster.bootstrap} (data {cluster.data_dir})...", err=True)
    status = cluster.up(timeout=timeout)
    pids = ", ".join(str(node.pid) for node in status.nodes)
    typer.echo(f"ready (pids {pids})", err=True)
    _say_admin(cluster.security, cluster.admin_config)
    typer.echo(status.bootstrap)


def _new_security(data_dir: Path, security: Security) -> BrokerSecurity:
    return BrokerSecurity.generate(data_dir / "tls" if security == "sasl-ssl" else None)


def _say_admin(security: BrokerSecurity | None, config: Path) -> None:
    if security is not None:
        typer.echo(f"{security.listener} (SCRAM-SHA-512) with ACLs; the admin's settings are "
                   f"in {config}: export STREAMTASK_CONFIG={config}", err=True)


def _check_security(log_dir: Path, current: BrokerSecurity | None, wanted: Security) -> None:
    """A data dir keeps the security it was formatted with (SCRAM users live in it)."""
    if (log_dir / "meta.properties").exists() and wanted != "none" and current is None:
        raise BrokerSetupError(
            f"{log_dir.parent} holds a broker created without security; use another "
            "--data-dir for a secured one")


@kafka_app.command()
def down(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Stop the broker (or every node of the cluster) this data dir started."""
    local = LocalCluster(data_dir) if LocalCluster.exists(data_dir) else LocalBroker(data_dir)
    if local.down():
        typer.echo("stopped")
    else:
        typer.echo(f"no broker running for {Path(data_dir).expanduser()}")


@kafka_app.command()
def status(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Say whether the broker runs, where it listens, and where its data is (exit 3 when
    stopped; with a cluster, when any node is stopped)."""
    if LocalCluster.exists(data_dir):
        cluster = LocalCluster(data_dir).status()
        for node in cluster.nodes:
            shown = f"running (pid {node.pid})" if node.running else "stopped"
            typer.echo(f"{node.bootstrap}: {shown}, data {node.data_dir}")
        if cluster.running < len(cluster.nodes):
            raise typer.Exit(3)
        return
    state = LocalBroker(data_dir).status()
    if state.running:
        typer.echo(f"running: {state.bootstrap} (pid {state.pid}, data {state.data_dir})")
    else:
        typer.echo(f"stopped (data {state.data_dir})")
        raise typer.Exit(3)
