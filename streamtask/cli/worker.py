"""``streamtask worker``: run an app's stages in this process or under a supervisor.

One process runs every stage it is given (all by default), each stage group on a Worker of
its own (:mod:`streamtask.worker.host`); ``--processes N`` runs N such processes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from streamtask import __version__, logs
from streamtask.cli.options import AppRef, Bootstrap, open_app
from streamtask.config import WorkerSettings
from streamtask.errors import AuthorizationFailed, ConfigurationError
from streamtask.kafka.topics import ensure
from streamtask.model.app import App
from streamtask.worker.host import StageHost, plan
from streamtask.worker.interpreter import tune_for_worker
from streamtask.worker.supervisor import SUPERVISED_ENV, Supervisor

if TYPE_CHECKING:
    from streamtask.ops.metrics import MetricsServer

LogFormat = Literal["text", "json"]
MAX_CONCURRENCY = 10_000
"""``--concurrency`` at most: each slot may be a thread (an absurd value hung the start)."""


def _on_signals(stop: Any) -> None:
    """First SIGTERM/Ctrl-C drains; a second one exits at once (uncommitted tasks rerun).

    A supervised child ignores SIGINT: a terminal's Ctrl-C reaches it too, and the
    supervisor's SIGTERM that follows would otherwise count as the second signal.
    """
    received: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    supervised = os.environ.get(SUPERVISED_ENV) == "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else handler)


def _on_supervisor_signals(supervisor: Supervisor) -> None:
    """First SIGTERM/Ctrl-C: the children drain; a second one: they are killed at once."""
    def handler(_signum: int, _frame: Any) -> None:
        supervisor.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def worker(
    app_ref: AppRef,
    stage: Annotated[list[str] | None, typer.Option(
        "--stage", "-s", help="Run only this stage (repeatable); default: all stages, each "
                              "with its own consumer group, in this one process.")] = None,
    concurrency: Annotated[int, typer.Option(
        min=1, max=MAX_CONCURRENCY, envvar="STREAMTASK_CONCURRENCY",
        help="Tasks in flight per stage (per consumer group) in each process.")] = 8,
    processes: Annotated[int, typer.Option(
        min=1, envvar="STREAMTASK_PROCESSES",
        help="Worker processes (each running all the chosen stages) under a supervisor "
             "that restarts crashed ones.")] = 1,
    drain_timeout: Annotated[float, typer.Option(
        min=0, help="Seconds running tasks may take to finish on shutdown/revoke.")] = 30.0,
    commit_interval: Annotated[float, typer.Option(
        min=0.01, help="Seconds between offset commits.")] = 1.0,
    commit_every: Annotated[int, typer.Option(
        min=1, help="Also commit once this many tasks finished since the last commit.")] = 2000,
    prefetch: Annotated[int, typer.Option(
        min=0, help="Tasks held beyond --concurrency (0 = auto: 1000). With --commit-every "
                    "it bounds what a crash runs again.")] = 0,
    max_tasks: Annotated[int | None, typer.Option(
        min=1, help="Exit after this many tasks (batch jobs, tests).")] = None,
    idle_timeout: Annotated[float | None, typer.Option(
        min=0, help="Exit after this many seconds without work.")] = None,
    instance_id: Annotated[str | None, typer.Option(
        envvar="STREAMTASK_INSTANCE_ID",
        help="Stable id of this worker; exactly-once stages use it so a restart fences the "
             "crashed predecessor's transaction at once. Unique per running worker.")] = None,
    create_topics: Annotated[bool, typer.Option(
        help="Create missing topics instead of refusing to start.")] = False,
    bootstrap: Bootstrap = None,
    log_level: Annotated[str, typer.Option(
        envvar="STREAMTASK_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    log_format: Annotated[LogFormat, typer.Option(
        envvar="STREAMTASK_LOG_FORMAT", help="text, or json: one object per line.")] = "text",
    metrics_port: Annotated[int | None, typer.Option(
        min=0, max=65535, envvar="STREAMTASK_METRICS_PORT",
        help="Serve Prometheus metrics on this port (/metrics); with --processes N, child i "
             "serves port + i.")] = None,
    metrics_addr: Annotated[str, typer.Option(
        envvar="STREAMTASK_METRICS_ADDR", help="Address the metrics port listens on.")
    ] = "0.0.0.0",
    trail: Annotated[bool, typer.Option(
        envvar="STREAMTASK_TRAIL",
        help="Write the execution trail of every run to <app>.events (`streamtask runs`).")
    ] = True,
) -> None:
    """Run an app's stages: consume, execute, and commit each offset only after its task ran."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigurationError(f"--log-level {log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    logs.configure(log_level, log_format)
    if processes > 1:
        plan(open_app(app_ref, bootstrap), stage)  # a wrong --stage: one error, not N crash loops
        child = [sys.executable, "-m", "streamtask", *_child_args(sys.argv[1:])]
        supervisor = Supervisor(child, processes, grace=drain_timeout + 10,
                                env_for=_child_env(instance_id, metrics_port))
        _on_supervisor_signals(supervisor)
        raise typer.Exit(supervisor.run())
    app = open_app(app_ref, bootstrap)
    if create_topics:
        ensure(app)
    settings = WorkerSettings(concurrency=concurrency, drain_timeout=drain_timeout,
                              commit_interval=commit_interval, commit_every=commit_every,
                              prefetch=prefetch, instance_id=instance_id)
    server = None
    if metrics_port is None:
        host = StageHost(app, stage, settings)
    else:
        host, server = _observed(app, stage, settings, metrics_port, metrics_addr)
    if trail:
        _write_trail(host)
    _on_signals(host.stop)
    tune_for_worker()
    try:
        stats = host.run(max_tasks=max_tasks, idle_timeout=idle_timeout)
    finally:
        if server is not None:
            server.close()
    summary = dict(sorted(stats.counts.items()))
    logging.getLogger("streamtask.worker").info(
        "worker.summary %s", " ".join(f"{k}={v}" for k, v in summary.items()),
        extra={"event": "worker.summary", "fields": summary})


def _observed(app: App, stages: list[str] | None, settings: WorkerSettings, port: int,
              addr: str) -> tuple[StageHost, MetricsServer]:
    """A host whose stages' metrics (one set for the process, every stage labelled) are
    served on ``addr:port``; close the returned server after the run."""
    from streamtask.ops.metrics import MetricsServer, WorkerMetrics  # prometheus_client if asked

    chosen = [stage for group in plan(app, stages) for stage in group]
    metrics = WorkerMetrics(app.name, chosen, instance_id=settings.instance_id,
                            version=__version__)
    host = StageHost(app, stages, settings, metrics.kafka_settings(app.kafka))
    host.subscribe(metrics, inline=True)
    metrics.worker = host.worker_id
    metrics.dropped_events(lambda: host.events_dropped)
    metrics.gauge("tasks_in_flight", lambda: host.in_flight)
    metrics.gauge("tasks_held", lambda: host.held)
    return host, MetricsServer(metrics, port, addr)


def _write_trail(host: StageHost) -> None:
    """Subscribe the execution trail's writer; a worker that may not create the trail's topic
    runs without it (and says how to get it) rather than not at all."""
    from streamtask.ops.trail import TrailWriter

    try:
        host.subscribe(TrailWriter(host.app, host.worker_id))
    except AuthorizationFailed as refused:
        logging.getLogger("streamtask.worker").warning(
            "trail.off the execution trail is off: %s", refused,
            extra={"event": "trail.off", "fields": {"error": str(refused)}})


def _child_args(argv: list[str]) -> list[str]:
    """The same command line for one supervised child, without --processes, --instance-id
    and --metrics-port (each child gets its own in its environment, see :func:`_child_env`)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _PER_CHILD:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in _PER_CHILD)):
            out.append(arg)
    return out


_PER_CHILD = ("--processes", "--instance-id", "--metrics-port")


def _child_env(instance_id: str | None,
               metrics_port: int | None) -> Callable[[int], dict[str, str]]:
    """Child ``i`` (0-based, kept across restarts) is instance ``<id>-i`` (exactly-once
    workers derive their transactional id from it) and serves metrics on ``metrics_port + i``."""
    def env(index: int) -> dict[str, str]:
        out = {}
        if instance_id is not None:
            out["STREAMTASK_INSTANCE_ID"] = f"{instance_id}-{index}"
        if metrics_port is not None:
            out["STREAMTASK_METRICS_PORT"] = str(metrics_port + index)
        return out
    return env
