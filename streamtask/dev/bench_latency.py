"""The ``latency`` scenario: enqueue -> handler start at fixed, modest rates (open loop).

Two sides take the same content as in the ``peers`` scenario (:mod:`streamtask.dev.bench_peers`):

``raw``
    The bare-record loop of the ``peers`` scenario (:class:`~streamtask.dev.bench_peers.BareLoop`),
    taking records the lowest-latency way this client offers: ``consume(500, timeout=0)``, and
    when nothing is queued a blocking ``poll`` that returns on the first record (a
    ``consume`` with a timeout waits for a *full* batch, which would add up to that timeout
    to every task at a modest rate). The reference: what the client and broker cost.
``streamtask``
    The default worker (``WorkerSettings()``, as ``streamtask worker`` runs it) on the same
    no-op stage with ``then=`` a sink stage.

Each run drains a fresh topic in a child process while a **second child process** sends at
fixed intended times ``t0 + n/rate`` (open loop: it never waits for the consumer; when late
it sends at once, and the lateness counts). The sender encodes every record before its clock
starts, sends record 0 and waits for its acknowledgement (connection, producer id), and
starts its schedule when the consumer has its partitions. Its producer has ``linger.ms=0``,
so the figures are the consumers' and not the sender's batching (a ``TaskProducer``, with
``linger.ms=5``, adds up to 5 ms to both sides). Each record carries its number ``n`` in the
first 8 bytes of its payload; the handler notes ``(n, time.time())`` when it starts; latency =
start - intended send time. The first second of sending is warm-up and left out.

Runs go in interleaved pairs (streamtask raw, raw streamtask, ...) at each rate; reported: the
median over runs of each side's p50/p99/p99.9/max, and the medians of the per-pair
differences (p50) and ratios (p99, p99.9). Rates: 1,000/s and a quarter of the raw loop's
maximum (a calibration drain of the ``peers`` raw loop), or those given. At these rates the
sender, the consumer and the broker leave the 2 cores room; at half the maximum they
saturated them and the p50 swung 3x between runs.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.dev import bench, bench_peers
from streamtask.events import Event
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure
from streamtask.model.envelope import Task
from streamtask.worker import Worker
from streamtask.worker.interpreter import tune_for_worker

__all__ = [
    "CALIBRATION_TASKS",
    "DEFAULT_RATE",
    "LATENCY_SECONDS",
    "RAW_MAX_SHARE",
    "LatencyAtRate",
    "LatencyReport",
    "latency",
    "run_child",
    "send_open_loop",
]

DEFAULT_RATE = 1_000.0
RAW_MAX_SHARE = 0.25
LATENCY_SECONDS = 10.0
"""Sending time per run at most: a run sends min(--tasks, rate x this) tasks."""
CALIBRATION_TASKS = 50_000
SENDER_START_DELAY = 0.1
RAW_POLL_WAIT = 0.1
"""The raw loop's blocking ``poll`` when nothing is queued (it returns on the first record)."""
PROGRESS_EVERY = 1_000
STALLED_AFTER = 60.0
"""Seconds without a record after which a consumer gives up (the sender must have failed)."""
SIDES: tuple[bench.Side, bench.Side] = ("streamtask", "raw")
PERCENTILES = (("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999))


def _number(payload: bytes) -> int:
    return int.from_bytes(payload[:8], "big")


# -- the sender's process ----------------------------------------------------------------------


def _values(side: bench.Side, app_name: str, bootstrap: str, tasks: int) -> list[bytes]:
    """Record ``n`` of ``tasks``, as ``side`` reads it, with ``n`` in its payload's first
    8 bytes (the rest as in the ``peers`` scenario)."""
    contents = [bench_peers._Content(c.id, n.to_bytes(8, "big") + c.payload[8:], c.created_at,
                                    c.headers)
                for n, c in enumerate(bench_peers._contents(tasks, seed=0))]
    if side == "streamtask":
        app = bench_peers.peers_app(app_name, bootstrap)
        return [value for _key, value in bench_peers._envelope_values(app, contents)]
    return [value for _key, value in bench_peers._bare_values(contents)]


def _lag_figures(lags: list[float]) -> dict[str, float]:
    ordered = sorted(lags)
    return {"send_lag_p99_ms": round(_percentile(ordered, 0.99) * 1000, 2),
            "send_lag_max_ms": round(ordered[-1] * 1000, 2)}


def send_open_loop(spec: bench.RunSpec) -> bench.RunResult:
    """In the sender's process: record 0, then, once told ``go`` on stdin, records
    1 .. ``spec.tasks - 1`` at ``t0 + n/spec.rate``."""
    values = _values(spec.side, spec.app, spec.bootstrap, spec.tasks)
    topic = bench_peers.peers_app(spec.app, spec.bootstrap).get_stage(bench.WORK).topic
    producer = kafka.producer(KafkaSettings(bootstrap=spec.bootstrap), **{"linger.ms": 0})
    producer.produce(topic, values[0])
    if producer.flush(30.0):
        raise bench.BenchError("the sender's first record was not acknowledged in 30 s")
    sys.stdin.readline()  # "go": the consumer has its partitions
    interval = 1.0 / spec.rate
    t0 = time.time() + SENDER_START_DELAY
    cpu = bench.cpu_seconds()
    lags = [0.0] * spec.tasks
    n = 1
    while n < spec.tasks:
        now = time.time()
        if t0 + n * interval > now:
            time.sleep(min(t0 + n * interval - now, 0.005))
            continue
        while n < spec.tasks and t0 + n * interval <= now:
            producer.produce(topic, values[n])
            lags[n] = time.time() - (t0 + n * interval)
            n += 1
        producer.poll(0)
    finished = time.time()
    if producer.flush(30.0):
        raise bench.BenchError("the sender's records were not all acknowledged in 30 s")
    return bench.RunResult("sender", "sender", spec.tasks - 1, finished - t0,
                           bench.cpu_seconds() - cpu, 0.0,
                           extra={"t0": t0, "interval": interval, **_lag_figures(lags[1:])})


class _Sender:
    """The sender's child process: it prepares at once and starts sending on :meth:`go`."""

    def __init__(self, spec: bench.RunSpec, stderr: IO[bytes]) -> None:
        self.stderr = stderr
        self.proc = subprocess.Popen(bench.child_command(spec), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=stderr, text=True,
                                     env=bench.child_env())
        self.started = False

    def go(self) -> None:
        if not self.started and self.proc.stdin is not None:
            self.started = True
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()

    def raise_if_failed(self) -> None:
        """Raise the sender's own error if it ended with one (the consumer then stalls)."""
        if self.proc.poll() not in (None, 0):
            raise bench.BenchError(f"the open-loop sender exited with code "
                                   f"{self.proc.returncode}:\n{bench.stderr_tail(self.stderr)}")

    def result(self) -> bench.RunResult:
        if not self.started:
            raise bench.BenchError("the consumer never got its partitions; nothing was sent")
        out, _ = self.proc.communicate(timeout=120)
        lines = [line.partition(" ")[2] for line in out.splitlines()
                 if line.startswith("result ")]
        if self.proc.returncode != 0 or not lines:
            raise bench.BenchError(f"the open-loop sender exited with code "
                                   f"{self.proc.returncode}:\n{bench.stderr_tail(self.stderr)}")
        return bench.RunResult(**json.loads(lines[-1]))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- the consumers' process ----------------------------------------------------------------------


class _Starts:
    """The handlers' notebook: ``(n, time.time())`` at each start; the first starts the clock."""

    def __init__(self, clock: bench.Clock) -> None:
        self.clock = clock
        self.starts: list[tuple[int, float]] = []

    def note(self, payload: bytes) -> None:
        self.starts.append((_number(payload), time.time()))  # list.append: thread-safe
        count = len(self.starts)
        if count == 1:
            self.clock.received()
        elif count % PROGRESS_EVERY == 0:
            bench.say("progress", count)


class _LatencyLoop(bench_peers.BareLoop):
    """The ``peers`` raw loop, taking records as soon as one is there, noting each start."""

    def __init__(self, spec: bench.RunSpec, topics: tuple[str, str], starts: _Starts) -> None:
        super().__init__(spec.bootstrap, topics, spec.group,
                         bench_peers._Handled(starts.clock))
        echo = self.echo

        def noting(task: dict[str, Any]) -> dict[str, Any]:
            starts.note(task["payload"])
            return echo(task)

        self.echo = noting
        self.last_record = time.monotonic()

    def _take(self) -> list[Any]:
        messages: list[Any] = self.consumer.consume(bench.RAW_BATCH, 0)
        if not messages:
            first = self.consumer.poll(RAW_POLL_WAIT)
            if first is not None:
                messages = [first, *self.consumer.consume(bench.RAW_BATCH - 1, 0)]
        now = time.monotonic()
        if messages:
            self.last_record = now
        elif now - self.last_record > STALLED_AFTER:
            raise bench.BenchError(f"no record for {STALLED_AFTER:.0f} s")
        return messages

    def _assigned(self, _consumer: Any, _partitions: list[Any]) -> None:
        self.last_record = time.monotonic()
        bench.say("ready")


def _ready_on_assignment(event: Event, _fields: dict[str, Any]) -> None:
    if event is Event.PARTITIONS_ASSIGNED:
        bench.say("ready")


def _child_streamtask(spec: bench.RunSpec, starts: _Starts) -> None:
    def noop(task: Task) -> Any:
        starts.note(task.payload["data"])
        return task.payload

    app = bench_peers.peers_app(spec.app, spec.bootstrap, noop)
    worker = Worker(app, [bench.WORK], WorkerSettings(concurrency=spec.concurrency))
    worker.events.subscribe(_ready_on_assignment, inline=True)
    tune_for_worker()  # as `streamtask worker` does
    worker.run(max_tasks=spec.tasks, idle_timeout=STALLED_AFTER)
    if len(starts.starts) < spec.tasks:
        raise bench.BenchError(f"no record for {STALLED_AFTER:.0f} s after "
                               f"{len(starts.starts)} of {spec.tasks}")


def run_child(spec: bench.RunSpec) -> bench.RunResult:
    """One side's latency run in this (fresh) process; :func:`bench.child_main` calls it."""
    clock = bench.Clock()
    starts = _Starts(clock)
    if spec.side == "streamtask":
        _child_streamtask(spec, starts)
    else:
        app = bench_peers.peers_app(spec.app, spec.bootstrap)
        topics = (app.get_stage(bench.WORK).topic, app.get_stage(bench.SINK).topic)
        _LatencyLoop(spec, topics, starts).run(spec.tasks)
    clock.ended()
    return clock.result(spec, {"starts": starts.starts})


# -- the parent ----------------------------------------------------------------------------------


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _figures(run: bench.RunResult, sent: bench.RunResult, rate: float) -> dict[str, Any]:
    """Percentiles of start - intended send time (ms) past the first second of sending."""
    t0, interval = sent.extra["t0"], sent.extra["interval"]
    warmup = min(int(rate), sent.tasks // 10)
    latencies = sorted((start - (t0 + n * interval)) * 1000
                       for n, start in run.extra["starts"] if n > warmup)
    if not latencies:
        raise bench.BenchError(f"the {run.side} run measured no task past the warm-up")
    return {
        "side": run.side, "measured": len(latencies),
        **{key: round(_percentile(latencies, q), 2) for key, q in PERCENTILES},
        "max_ms": round(latencies[-1], 2),
        "achieved_send_rate": round(sent.rate, 1),
        "send_lag_p99_ms": sent.extra["send_lag_p99_ms"],
        "send_lag_max_ms": sent.extra["send_lag_max_ms"],
        "consumer_cpu_percent": round(100 * run.cpu_seconds / max(run.seconds, 1e-9), 1),
    }


def _run(bootstrap: str, side: bench.Side, tasks: int, rate: float, concurrency: int,
         progress: bench.ProgressFn, label: str) -> dict[str, Any]:
    """One side at one rate on fresh topics: ``tasks`` records after record 0."""
    app = bench_peers.peers_app(f"latency-{side}-{uuid.uuid4().hex[:8]}", bootstrap)
    ensure(app)
    group = bench_peers.group_of(app, side)
    title = f"{label}{side} at {rate:,.0f}/s"
    progress(title, 0, tasks)
    with tempfile.TemporaryFile() as stderr:
        sender = _Sender(bench.RunSpec("sender", side, bootstrap, app.name, group, tasks + 1,
                                       concurrency, rate=rate), stderr)
        try:
            spec = bench.RunSpec("latency", side, bootstrap, app.name, group, tasks + 1,
                                 concurrency)
            try:
                result = bench.spawn_run(spec, lambda n: progress(title, n, tasks), sender.go)
            except bench.BenchError:
                sender.raise_if_failed()  # the sender's error explains the consumer's
                raise
            sent = sender.result()
        finally:
            sender.close()
            bench.delete_topics(app)
    return _figures(result, sent, rate)


@dataclass
class LatencyAtRate:
    rate: float
    tasks: int
    """Tasks sent per run (after the sender's first record)."""
    streamtask: dict[str, float]
    """Median over the runs of each figure (p50_ms, p99_ms, p999_ms, max_ms, ...)."""
    raw: dict[str, float]
    p50_diff_ms: float
    """Median over pairs of streamtask's p50 minus the raw loop's (goal: <= 2 ms)."""
    p99_ratio: float
    """Median over pairs of streamtask's p99 over the raw loop's (goal: <= 1.5)."""
    p999_ratio: float
    pairs: list[dict[str, Any]] = field(default_factory=list)
    """Per pair: both runs' figures and their p50 difference and p99/p99.9 ratios."""


@dataclass
class LatencyReport:
    concurrency: int
    pairs: int
    raw_max_rate: float | None
    """The raw loop's drain rate the quarter-of-maximum rate was taken from (None: rates
    given)."""
    rates: list[LatencyAtRate] = field(default_factory=list)


def _medians(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {k: round(statistics.median(run[k] for run in runs), 2) for k in keys}


def _compare(streamtask: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    return {"streamtask": streamtask, "raw": raw,
            "p50_diff_ms": round(streamtask["p50_ms"] - raw["p50_ms"], 2),
            "p99_ratio": round(streamtask["p99_ms"] / raw["p99_ms"], 3),
            "p999_ratio": round(streamtask["p999_ms"] / raw["p999_ms"], 3)}


def at_rate(bootstrap: str, rate: float, tasks: int, pairs: int, concurrency: int,
            progress: bench.ProgressFn = bench.no_progress) -> LatencyAtRate:
    """``pairs`` interleaved pairs of runs (streamtask raw, raw streamtask, ...) at ``rate``."""
    runs: dict[bench.Side, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for pair in range(pairs):
        for side in SIDES if pair % 2 == 0 else SIDES[::-1]:
            runs[side].append(_run(bootstrap, side, tasks, rate, concurrency, progress,
                                   f"pair {pair + 1}/{pairs}: "))
    compared = [_compare(a, b) for a, b in zip(runs["streamtask"], runs["raw"], strict=True)]
    return LatencyAtRate(
        rate=round(rate, 1), tasks=tasks,
        streamtask=_medians(runs["streamtask"]), raw=_medians(runs["raw"]),
        p50_diff_ms=round(statistics.median(c["p50_diff_ms"] for c in compared), 2),
        p99_ratio=round(statistics.median(c["p99_ratio"] for c in compared), 3),
        p999_ratio=round(statistics.median(c["p999_ratio"] for c in compared), 3),
        pairs=compared)


def latency(bootstrap: str, tasks: int = bench.DEFAULT_TASKS,
            rates: Sequence[float] | None = None, pairs: int = 3, concurrency: int = 8,
            progress: bench.ProgressFn = bench.no_progress) -> LatencyReport:
    """Enqueue-to-start latency of the worker and of the raw loop at each of ``rates``.

    By default the rates are 1,000/s and a quarter of the raw loop's maximum, measured by a
    calibration drain of the ``peers`` raw loop; each run sends min(``tasks``, rate x
    :data:`LATENCY_SECONDS`) tasks.
    """
    raw_max_rate = None
    if not rates:
        raw_max_rate = bench_peers.peers_run(bootstrap, "raw", min(tasks, CALIBRATION_TASKS),
                                             concurrency, progress, label="calibrate: ").rate
        rates = [DEFAULT_RATE, RAW_MAX_SHARE * raw_max_rate]
    report = LatencyReport(concurrency, pairs, raw_max_rate)
    for rate in rates:
        count = max(1, min(tasks, int(rate * LATENCY_SECONDS)))
        report.rates.append(at_rate(bootstrap, rate, count, pairs, concurrency, progress))
    return report


def summary_lines(report: LatencyReport) -> list[str]:
    """One line per rate: the medians of the per-pair differences and ratios."""
    return [f"at {at.rate:,.0f}/s: streamtask p50 - raw p50 = {at.p50_diff_ms:+.2f} ms, "
            f"p99 streamtask/raw = {at.p99_ratio:.2f}x, p99.9 = {at.p999_ratio:.2f}x "
            f"(medians of {len(at.pairs)} pairs; per pair: "
            + ", ".join(f"{c['p50_diff_ms']:+.2f} ms / {c['p99_ratio']:.2f}x"
                        for c in at.pairs) + ")"
            for at in report.rates]
