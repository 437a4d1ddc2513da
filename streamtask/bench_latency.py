"""The ``latency`` scenario: enqueue -> handler start at fixed, modest rates (open loop).

For each rate, each side (the worker, then the raw envelope loop of :mod:`streamtask.bench`
as the reference) drains a fresh topic in a child process while a *second* child process
sends at fixed intended times ``t0 + i/rate`` (open loop: it never waits for the consumer;
when late it sends at once and the lateness counts). Each task carries its intended send
time; the handler notes its start; latency = start - intended send time. The sender's own
process keeps its encoding and producing off the measured consumer's interpreter, and the
modest rates (1,000/s and a quarter of the raw loop's maximum by default) keep the sender,
the consumer and the broker from saturating the 2 cores, which made the old half-of-maximum
figure swing by 3x between runs.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from streamtask import bench

__all__ = ["DEFAULT_RATE", "LATENCY_SECONDS", "LatencyAtRate", "LatencyReport", "latency",
           "send_open_loop"]

DEFAULT_RATE = 1_000.0
RAW_MAX_SHARE = 0.25
LATENCY_SECONDS = 20.0
"""Sending time per run at most: a rate's run sends min(--tasks, rate x this) tasks."""
SENDER_START_DELAY = 0.2


@dataclass
class LatencyAtRate:
    rate: float
    tasks: int
    streamtask: dict[str, float]
    raw: dict[str, float]
    """The raw envelope loop at the same rate (same keys), the reference."""


@dataclass
class LatencyReport:
    concurrency: int
    raw_max_rate: float | None
    """The raw loop's drain rate the quarter-of-maximum rate was taken from."""
    rates: list[LatencyAtRate] = field(default_factory=list)


# -- the sender's process ---------------------------------------------------------------------


def send_open_loop(spec: bench.RunSpec) -> bench.RunResult:
    """In the sender's process: send ``spec.tasks`` at ``spec.rate`` on fixed intended times."""
    app = bench.bench_app(spec.app, spec.bootstrap)
    interval, max_lag = 1.0 / spec.rate, 0.0
    with app.producer() as producer:
        producer.send(bench.WORK, {"n": -1, "sent_at": 0.0, "label": "warm"}, key="warm")
        start = time.time() + SENDER_START_DELAY
        cpu = bench.cpu_seconds()
        n = 0
        while n < spec.tasks:
            now = time.time()
            if start + n * interval > now:
                time.sleep(min(start + n * interval - now, 0.01))
                continue
            while n < spec.tasks and start + n * interval <= now:
                intended = start + n * interval
                producer.send(bench.WORK, {"n": n, "sent_at": intended, "label": "bench"})
                max_lag = max(max_lag, time.time() - intended)
                n += 1
        finished = time.time()
    return bench.RunResult("sender", "sender", spec.tasks, finished - start,
                           bench.cpu_seconds() - cpu, 0.0, extra={"max_lag": max_lag})


class _Sender:
    """The sender's child process: started when the consumer has its partitions."""

    def __init__(self, spec: bench.RunSpec, stderr: IO[bytes]) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = stderr

    def start(self) -> None:
        if self.proc is None:
            self.proc = subprocess.Popen(bench.child_command(self.spec), stdout=subprocess.PIPE,
                                         stderr=self.stderr, text=True, env=bench.child_env())

    def result(self) -> bench.RunResult:
        if self.proc is None:
            raise bench.BenchError("the consumer never got its partitions; nothing was sent")
        out, _ = self.proc.communicate(timeout=120)
        lines = [line.partition(" ")[2] for line in out.splitlines()
                 if line.startswith("result ")]
        if self.proc.returncode != 0 or not lines:
            raise bench.BenchError(f"the open-loop sender exited with code "
                                   f"{self.proc.returncode}:\n{bench.stderr_tail(self.stderr)}")
        return bench.RunResult(**json.loads(lines[-1]))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- the parent ----------------------------------------------------------------------------------


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _figures(starts: list[list[float]], sent: bench.RunResult, rate: float) -> dict[str, Any]:
    warmup = min(int(rate), len(starts) // 10)  # the first second of sending warms up
    by_n = sorted(tuple(s) for s in starts if s[0] > 0)[warmup:]
    latencies = sorted((start - intended) * 1000 for intended, start in by_n)
    return {
        "measured": len(latencies),
        "achieved_send_rate": round(sent.rate, 1),
        "max_send_lag_ms": round(sent.extra["max_lag"] * 1000, 2),
        "p50_ms": round(_percentile(latencies, 0.5), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "p999_ms": round(_percentile(latencies, 0.999), 2),
        "max_ms": round(latencies[-1], 2),
    }


def _run(bootstrap: str, side: bench.Side, tasks: int, rate: float, concurrency: int,
         progress: bench.ProgressFn) -> dict[str, Any]:
    """One side at one rate: percentiles of handler start - intended send time, in ms."""
    app = bench.fresh_app(bootstrap, f"latency-{side}")
    group = app.get_stage(bench.WORK).group if side == "streamtask" else f"{app.name}.raw"
    title = f"latency: {side} at {rate:,.0f}/s"
    progress(title, 0, tasks)
    with tempfile.TemporaryFile() as stderr:
        sender = _Sender(bench.RunSpec("sender", side, bootstrap, app.name, group, tasks,
                                       concurrency, rate=rate), stderr)
        try:
            # +1: the sender's warm-up record, sent before its clock starts
            spec = bench.RunSpec("latency", side, bootstrap, app.name, group, tasks + 1,
                                 concurrency)
            result = bench.spawn_run(spec, lambda n: progress(title, n, tasks), sender.start)
            sent = sender.result()
        finally:
            sender.close()
            bench.delete_topics(app)
    return _figures(result.extra["starts"], sent, rate)


def latency(bootstrap: str, tasks: int = bench.DEFAULT_TASKS,
            rates: Sequence[float] | None = None, concurrency: int = 8,
            progress: bench.ProgressFn = bench.no_progress,
            raw_max_rate: float | None = None) -> LatencyReport:
    """Enqueue-to-start latency of the worker and of the raw loop at each of ``rates``.

    By default the rates are 1,000/s and a quarter of the raw loop's maximum: ``raw_max_rate``
    if given (say, from a drain just measured), else a calibration drain of the raw loop.
    """
    if rates is None:
        if raw_max_rate is None:
            raw_max_rate = bench.measured_run(bootstrap, "drain", "raw", min(tasks, 50_000),
                                              concurrency, progress,
                                              label="calibrate: ").rate
        rates = [DEFAULT_RATE, RAW_MAX_SHARE * raw_max_rate]
    report = LatencyReport(concurrency, raw_max_rate)
    for rate in rates:
        count = max(1, min(tasks, int(rate * LATENCY_SECONDS)))
        report.rates.append(LatencyAtRate(
            round(rate, 1), count,
            streamtask=_run(bootstrap, "streamtask", count, rate, concurrency, progress),
            raw=_run(bootstrap, "raw", count, rate, concurrency, progress)))
    return report
