"""``streamtask bench``: the worker against the raw confluent-kafka loop, on a real broker."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamtask.dev import bench as benchmarks
from streamtask.dev import bench_latency, bench_peers
from streamtask.dev.broker import LocalBroker, free_port


class Scenario(StrEnum):
    drain = "drain"
    latency = "latency"
    memory = "memory"
    peers = "peers"
    all = "all"


@contextmanager
def _broker(bootstrap: str | None, console: Console) -> Iterator[str]:
    """The given cluster, or a throwaway local broker on free ports stopped at the end."""
    if bootstrap:
        yield bootstrap
        return
    data_dir = Path(tempfile.mkdtemp(prefix="streamtask-bench-broker-"))
    broker = LocalBroker(data_dir, port=free_port(), controller_port=free_port())
    console.print(f"starting a local Kafka broker on {broker.bootstrap} ({data_dir})")
    try:
        broker.up(timeout=120)
        yield broker.bootstrap
    finally:
        broker.down()
        shutil.rmtree(data_dir, ignore_errors=True)


class _Bar:
    """Adapts ``progress(description, completed, total)`` callbacks to one rich bar."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = progress.add_task("starting", total=None)

    def __call__(self, description: str, completed: int, total: int) -> None:
        self._progress.update(self._task, description=description, completed=completed,
                              total=total)


def _drain_table(report: benchmarks.DrainReport) -> Table:
    table = Table(title=f"drain: {report.tasks:,} tasks, {report.pairs} pairs, "
                        f"concurrency {report.concurrency}")
    for column in ("side", "median tasks/s", "runs (tasks/s)", "CPU µs/task", "join s"):
        table.add_column(column)
    for name, side in (("streamtask", report.streamtask), ("raw confluent-kafka", report.raw)):
        table.add_row(name, f"{side.median_rate:,.0f}",
                      " ".join(f"{rate:,.0f}" for rate in side.rates),
                      f"{side.median_cpu_us_per_task:.1f}", f"{side.median_join_seconds:.2f}")
    return table


def _latency_table(lat: bench_latency.LatencyReport) -> Table:
    table = Table(title=f"latency: enqueue -> handler start, open loop, sender in its own "
                        f"process; medians of {lat.pairs} interleaved pairs")
    for column in ("rate/s", "side", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "sent/s",
                   "send lag p99 ms", "consumer CPU %"):
        table.add_column(column)
    keys = ("p50_ms", "p99_ms", "p999_ms", "max_ms", "achieved_send_rate", "send_lag_p99_ms",
            "consumer_cpu_percent")
    for at in lat.rates:
        for name, row in (("streamtask", at.streamtask), ("raw loop (bare record)", at.raw)):
            table.add_row(f"{at.rate:,.0f}", name, *(f"{row[k]:,}" for k in keys))
    return table


def _peers_table(report: bench_peers.PeersReport) -> Table:
    table = Table(title=f"peers: {report.tasks:,} tasks, {report.rounds} rounds, bare record "
                        "vs envelope, same content")
    for column in ("side", "median tasks/s", "runs (tasks/s)", "CPU µs/task", "vs raw",
                   "vs Quix", "CPU vs raw", "switches/task"):
        table.add_column(column)
    names = {"raw": "raw loop", "quix": f"Quix {report.quix}", "streamtask": "streamtask"}
    for side, summary in report.sides.items():
        def ratio(of: dict[str, float], other: str, side: str = side) -> str:
            if side == other:
                return "1.00"
            key = f"{side}/{other}"
            return f"{of[key]:.2f}" if key in of else "-"

        table.add_row(names[side], f"{summary.median_rate:,.0f}",
                      " ".join(f"{rate:,.0f}" for rate in summary.rates),
                      f"{summary.median_cpu_us_per_task:.1f}", ratio(report.ratios, "raw"),
                      ratio(report.ratios, "quix"), ratio(report.cpu_ratios, "raw"),
                      f"{report.switches_per_task.get(side, 0.0):.2f}")
    return table


def _print_human(console: Console, results: dict[str, Any]) -> None:
    console.print(" ".join(f"{k}={v}" for k, v in results["machine"].items()))
    drain = results.get("drain")
    if isinstance(drain, benchmarks.DrainReport):
        console.print(_drain_table(drain))
        console.print(f"ratio streamtask/raw (median of per-pair ratios): {drain.ratio:.3f} "
                      f"(pairs: {', '.join(f'{r:.3f}' for r in drain.ratios)}); "
                      f"CPU per task ratio: {drain.cpu_ratio:.2f}")
    lat = results.get("latency")
    if isinstance(lat, bench_latency.LatencyReport):
        console.print(_latency_table(lat))
        if lat.raw_max_rate is not None:
            console.print(f"the raw loop's maximum (calibration drain): "
                          f"{lat.raw_max_rate:,.0f} tasks/s")
        for line in bench_latency.summary_lines(lat):
            console.print(line)
    peers = results.get("peers")
    if isinstance(peers, bench_peers.PeersReport):
        if peers.skipped:
            console.print(peers.skipped)
        console.print(_peers_table(peers))
        console.print("ratios are medians of the per-round ratios: " + "; ".join(
            f"{k} {', '.join(f'{r:.2f}' for r in v)}" for k, v in peers.per_round.items()))
    mem = results.get("memory")
    if isinstance(mem, benchmarks.MemoryReport):
        table = Table(title=f"memory: RSS (MiB) while draining {mem.tasks:,} tasks")
        for column in ("side", "baseline", "10%", "50%", "90%", "peak", "VmHWM", "tasks/s"):
            table.add_column(column)
        for side, row in mem.sides.items():
            table.add_row(side, *(f"{row[k]}" for k in (
                "baseline_mib", "at_10_mib", "at_50_mib", "at_90_mib", "peak_mib",
                "hwm_mib")), f"{row['rate']:,.0f}")
        console.print(table)


def _jsonable(results: dict[str, Any]) -> dict[str, Any]:
    return {name: asdict(value) if hasattr(value, "__dataclass_fields__") else value
            for name, value in results.items()}


def bench(
    bootstrap: Annotated[str | None, typer.Option(
        "--bootstrap", "-b", envvar="STREAMTASK_BOOTSTRAP",
        help="Kafka bootstrap servers (default: start a throwaway local broker).")] = None,
    tasks: Annotated[int | None, typer.Option(
        min=1, help=f"Tasks per run (default {benchmarks.DEFAULT_TASKS:,}; the memory "
                    f"scenario drains {benchmarks.DEFAULT_MEMORY_TASKS:,}).")] = None,
    pairs: Annotated[int, typer.Option(
        min=1, help="Interleaved streamtask/raw pairs of the drain scenario and of each rate "
                    "of the latency scenario (rounds of the peers scenario).")] = 5,
    scenario: Annotated[Scenario, typer.Option(
        help="drain: throughput vs the raw loop; latency: open-loop enqueue-to-handler-start "
             "vs the bare-record raw loop, at 1,000/s and a quarter of the raw loop's "
             "maximum (or --rate); "
             "memory: RSS while draining a large backlog; peers: vs a bare-record loop and "
             "Quix Streams; all: drain, latency and memory.")] = Scenario.drain,
    concurrency: Annotated[int, typer.Option(
        min=1, help="The worker's --concurrency (tasks in flight).")] = 8,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print the results as JSON on stdout.")] = False,
    rate: Annotated[list[float] | None, typer.Option(
        "--rate", help="Latency scenario: send at this many tasks/s (repeat for "
                                "several rates; default: 1,000 and a quarter of the raw "
                                "loop's maximum, measured first). Each run sends "
                                f"min(--tasks, rate x {bench_latency.LATENCY_SECONDS:.0f} s) "
                                "tasks.")] = None,
    observed: Annotated[bool, typer.Option(
        "--observed", help="The worker serves Prometheus metrics and writes the execution "
                           "trail during the drain, as `worker --metrics-port P` does (to "
                           "measure their cost).")] = False,
) -> None:
    """Measure the worker against the raw confluent-kafka loop doing the same work."""
    if rate and scenario not in (Scenario.latency, Scenario.all):
        raise benchmarks.BenchError("--rate applies to the latency scenario only "
                                    "(--scenario latency or all)")
    if rate and min(rate) <= 0:
        raise benchmarks.BenchError(f"--rate must be a positive number of tasks per second, "
                                    f"not {min(rate):g}")
    console = Console(stderr=True)
    runs = [scenario.value] if scenario is not Scenario.all else ["drain", "latency", "memory"]
    results: dict[str, Any] = {}
    with _broker(bootstrap, console) as servers, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, refresh_per_second=4,
            transient=True) as progress:
        results["machine"] = benchmarks.machine()
        bar = _Bar(progress)
        if "drain" in runs:
            results["drain"] = benchmarks.drain(
                servers, tasks or benchmarks.DEFAULT_TASKS, pairs, concurrency, bar,
                observed=observed)
        if "latency" in runs:
            results["latency"] = bench_latency.latency(
                servers, tasks or benchmarks.DEFAULT_TASKS, rate, pairs, concurrency, bar)
        if "peers" in runs:
            results["peers"] = bench_peers.peers(
                servers, tasks or benchmarks.DEFAULT_TASKS, pairs, concurrency, bar)
        if "memory" in runs:
            results["memory"] = benchmarks.memory(
                servers, tasks or benchmarks.DEFAULT_MEMORY_TASKS, concurrency, bar)
    if json_output:
        typer.echo(json.dumps(_jsonable(results), indent=2))
    else:
        _print_human(Console(), results)
