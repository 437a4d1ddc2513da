"""Benchmarks of the worker against the raw confluent-kafka loop doing the same work.

Every measured run happens in a fresh child process (``python -c "...child_main()"``) that
drains a topic the parent filled beforehand, so each run starts from the same interpreter
state, no client of an earlier run lingers in it, CPU time is exactly that child's (all its
threads, librdkafka's included) and peak RSS is that drain's alone. The parent creates fresh
topics, fills them, spawns the child, reads its progress lines, checks the committed offsets
and the sink topic afterwards, and deletes the topics.

Scenarios (see ``benchmarks/README.md``):

``drain``
    N tasks preloaded on a fresh 8-partition topic, drained by (A) a :class:`Worker` running a
    no-op stage with ``then=`` a sink stage, and (B) the raw batched loop: ``consume`` ->
    decode the envelope -> encode the child envelope -> ``produce`` -> store offsets once
    every delivery of the batch is acknowledged -> commit on an interval. Runs go in
    interleaved pairs (A B, B A, ...) after one warm-up of each; the window runs from the
    first record received (group joins excluded) to the final offset commit.
``latency`` (:mod:`streamtask.dev.bench_latency`)
    Open loop at fixed, modest rates, the sender in a child process of its own; the handler
    notes ``time.time()`` at start; latency = start - intended send time. The bare-record
    raw loop of ``peers``, at the same rate, is the reference.
``memory``
    RSS of the draining process sampled while it drains a large backlog (default 1M tasks).
``peers`` (:mod:`streamtask.dev.bench_peers`)
    The worker against a bare-record raw loop and Quix Streams, on the same content.

The worker is timed through its public seams: its handler starts the clock, an event
subscriber stops it at the commit that covers every task.
"""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.errors import StreamtaskError
from streamtask.events import Event, EventBus
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import app_topics, ensure
from streamtask.model.app import App
from streamtask.model.envelope import Task
from streamtask.ops import tracing
from streamtask.worker import Worker
from streamtask.worker.interpreter import tune_for_worker

__all__ = [
    "DEFAULT_MEMORY_TASKS",
    "DEFAULT_TASKS",
    "BenchError",
    "Clock",
    "DrainReport",
    "MemoryReport",
    "RunResult",
    "RunSpec",
    "SideSummary",
    "child_command",
    "child_env",
    "child_main",
    "cpu_seconds",
    "delete_topics",
    "drain",
    "durable",
    "fresh_app",
    "memory",
    "no_progress",
    "say",
    "spawn_run",
    "stderr_tail",
    "summarise",
    "warmup_size",
]

DEFAULT_TASKS = 200_000
DEFAULT_MEMORY_TASKS = 1_000_000
WARMUP_TASKS = 20_000
PARTITIONS = 8
WORK, SINK = "work", "sink"
RAW_BATCH = 500
RAW_CONSUME_TIMEOUT = 0.01
RAW_COMMIT_INTERVAL = 1.0  # WorkerSettings.commit_interval's default
RAW_MAX_UNACKED = 20_000  # bounded in-flight window of the raw loop
MEMORY_SAMPLE_INTERVAL = 0.05

Side = Literal["streamtask", "raw", "quix"]
Mode = Literal["drain", "latency", "memory", "peers", "sender"]
SIDES: tuple[Side, Side] = ("streamtask", "raw")
ProgressFn = Callable[[str, int, int], None]
"""``progress(description, completed, total)``; the CLI draws it."""



def bench_schema(name: str, doc: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    """An Avro record schema of the benchmarks' namespace (``streamtask.bench``)."""
    return {"type": "record", "name": name, "namespace": "streamtask.bench", "doc": doc,
            "fields": fields}


PROBE_SCHEMA = bench_schema(
    "Probe", "A benchmark task: its number, its intended send time (epoch s), a short label.",
    [{"name": "n", "type": "long"}, {"name": "sent_at", "type": "double"},
     {"name": "label", "type": "string"}])


class BenchError(StreamtaskError):
    """A benchmark run failed or did not do all of its work."""


def no_progress(_description: str, _completed: int, _total: int) -> None:
    return None


# -- the app both sides use ----------------------------------------------------------------


def _noop(task: Task) -> Any:
    return task.payload


def bench_app(name: str, bootstrap: str,
              handler: Callable[[Task], Any] = _noop) -> App:
    """``work`` (the measured stage, results ``then=`` ``sink``) and ``sink``, 8 partitions."""
    app = App(name, kafka=KafkaSettings(bootstrap=bootstrap))
    app.stage(WORK, payload=PROBE_SCHEMA, partitions=PARTITIONS, then=SINK)(handler)
    app.stage(SINK, payload=PROBE_SCHEMA, partitions=PARTITIONS)(_noop)
    return app


def _probe(n: int, sent_at: float = 0.0) -> dict[str, Any]:
    return {"n": n, "sent_at": sent_at, "label": "bench"}


def fresh_app(bootstrap: str, label: str) -> App:
    app = bench_app(f"bench-{label}-{uuid.uuid4().hex[:8]}", bootstrap)
    ensure(app)
    return app


def fill(app: App, tasks: int, progress: ProgressFn = no_progress) -> None:
    """Put ``tasks`` work tasks on the app's work topic (keyed by task id) and flush."""
    producer = kafka.producer(app.kafka)
    codec, topic = app.codec, app.get_stage(WORK).topic
    step = max(1, tasks // 100)
    for n in range(tasks):
        task = Task.new(WORK, _probe(n), headers=tracing.outgoing(None))  # as send() does
        value = codec.encode(task)
        kafka.produce(producer, topic, value, task.id)
        if n % step == 0:
            producer.poll(0)
            progress(f"fill {topic}", n, tasks)
    if producer.flush(60.0):
        raise BenchError(f"filling {topic}: records still unacknowledged after 60 s")
    progress(f"fill {topic}", tasks, tasks)


def durable(app: App, group: str) -> tuple[int, int]:
    """(offsets committed by ``group`` on the work topic, records on the sink topic)."""
    work, sink = app.get_stage(WORK).topic, app.get_stage(SINK).topic
    consumer = kafka.consumer(app.kafka, group)
    try:
        committed = consumer.committed(
            [kafka.TopicPartition(work, p) for p in range(PARTITIONS)], timeout=30)
        done = sum(max(tp.offset, 0) for tp in committed)
        produced = 0
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(kafka.TopicPartition(sink, p),
                                                       timeout=30)
            produced += high - low
    finally:
        consumer.close()
    return done, produced


def delete_topics(app: App, timeout: float = 30.0) -> None:
    """Delete the app's topics, waiting ``timeout`` seconds for all of them together.

    Best effort, on a throwaway broker: a busy one may take longer than that to answer.
    """
    topics = [spec.name for spec in app_topics(app)]
    futures = kafka.admin(app.kafka).delete_topics(topics, operation_timeout=timeout)
    concurrent.futures.wait(futures.values(), timeout=timeout)


# -- results -------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One drain by one side, as measured inside its child process."""

    side: str
    mode: str
    tasks: int
    seconds: float
    """From the first record received to the final synchronous offset commit."""
    cpu_seconds: float
    """user + sys of the child process (all threads) over the same window."""
    join_seconds: float
    """From subscribe to the first record (group join + first fetch; not in ``seconds``)."""
    committed: int = 0
    sink_records: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_task(self) -> float:
        return self.cpu_seconds / self.tasks * 1e6 if self.tasks else 0.0

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 1),
                "cpu_us_per_task": round(self.cpu_us_per_task, 2)}


@dataclass
class SideSummary:
    rates: list[float]
    cpu_us_per_task: list[float]
    median_rate: float
    median_cpu_us_per_task: float
    median_join_seconds: float


def summarise(runs: Sequence[RunResult]) -> SideSummary:
    return SideSummary(
        rates=[round(r.rate, 1) for r in runs],
        cpu_us_per_task=[round(r.cpu_us_per_task, 2) for r in runs],
        median_rate=statistics.median(r.rate for r in runs),
        median_cpu_us_per_task=statistics.median(r.cpu_us_per_task for r in runs),
        median_join_seconds=statistics.median(r.join_seconds for r in runs))


@dataclass
class DrainReport:
    tasks: int
    pairs: int
    concurrency: int
    streamtask: SideSummary
    raw: SideSummary
    ratios: list[float]
    """Per pair: streamtask tasks/s / raw tasks/s."""
    ratio: float
    """Median of ``ratios``."""
    cpu_ratio: float
    """Median per-pair streamtask CPU/task over raw CPU/task."""
    runs: list[dict[str, Any]]


@dataclass
class MemoryReport:
    tasks: int
    concurrency: int
    sides: dict[str, dict[str, Any]]
    """Per side: baseline/peak/high-water RSS and RSS at 10/50/90 % of progress (MiB); rate."""


# -- the child process ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """What one child run does (passed to the child as JSON)."""

    mode: Mode
    side: Side
    bootstrap: str
    app: str
    group: str
    tasks: int
    concurrency: int
    observed: bool = False
    """The streamtask side serves Prometheus metrics and writes the execution trail, as
    ``streamtask worker --metrics-port P`` does."""
    rate: float = 0.0
    """Tasks per second of an open-loop sender (mode ``sender``)."""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _switches() -> int:
    """Context switches of this process so far, every thread's, ended threads' included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


class Clock:
    """When the drain began (first record) and ended (final commit), in wall and CPU time,
    and the context switches in between (thread wake-ups: a cost the profiles do not show)."""

    def __init__(self) -> None:
        self.subscribed = time.perf_counter()
        self.first: float | None = None
        self.cpu_first = 0.0
        self.switches_first = 0
        self.end: float | None = None
        self.cpu_end = 0.0
        self.switches_end = 0

    def received(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.cpu_first = cpu_seconds()
            self.switches_first = _switches()

    def ended(self) -> None:
        if self.end is None:
            self.end = time.perf_counter()
            self.cpu_end = cpu_seconds()
            self.switches_end = _switches()

    def result(self, spec: RunSpec, extra: dict[str, Any] | None = None) -> RunResult:
        if self.first is None or self.end is None:
            raise BenchError(f"{spec.side} run of {spec.app} received no record")
        switches = (self.switches_end - self.switches_first) / max(spec.tasks, 1)
        return RunResult(spec.side, spec.mode, spec.tasks, self.end - self.first,
                         self.cpu_end - self.cpu_first, self.first - self.subscribed,
                         extra={"switches_per_task": round(switches, 3), **(extra or {})})


def say(*parts: object) -> None:
    print(*parts, flush=True)


class _CommitProgress:
    """Event subscriber, and the worker's timing hook: notes when the worker subscribed, prints
    the committed count (sum of positions on fresh topics) and ends the clock at the commit
    that covers every task (the final synchronous one, unless an interval commit got there
    first)."""

    def __init__(self, clock: Clock, tasks: int) -> None:
        self.clock, self.tasks = clock, tasks
        self.positions: dict[str, int] = {}
        self.announced = False

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        if event is Event.OFFSETS_COMMITTED:
            self.positions.update(fields["offsets"])
            committed = sum(self.positions.values())
            if committed >= self.tasks:
                self.clock.ended()
            say("progress", committed)
        elif event is Event.WORKER_STARTED:
            self.clock.subscribed = time.perf_counter()
        elif event is Event.PARTITIONS_ASSIGNED and not self.announced:
            self.announced = True
            say("ready")


def _timed(clock: Clock, handler: Callable[[Task], Any]) -> Callable[[Task], Any]:
    """The handler, starting the clock at its first call (the worker's other timing hook)."""

    def timed(task: Task) -> Any:
        clock.received()
        return handler(task)

    return timed


class _RssSampler:
    """Samples VmRSS (KiB) against progress on a background thread."""

    def __init__(self, progress: Callable[[], int]) -> None:
        self._progress = progress
        self.samples: list[tuple[int, int]] = []
        self.baseline = _status_kib("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_INTERVAL):
            self.samples.append((self._progress(), _status_kib("VmRSS")))

    def report(self, tasks: int) -> dict[str, Any]:
        samples = self.samples or [(tasks, _status_kib("VmRSS"))]
        mib = 1024.0

        def at(fraction: float) -> float:
            reached = [rss for done, rss in samples if done >= fraction * tasks]
            return round((reached[0] if reached else samples[-1][1]) / mib, 1)

        return {
            "baseline_mib": round(self.baseline / mib, 1),
            "peak_mib": round(max(rss for _, rss in samples) / mib, 1),
            # VmHWM: this process image's high-water mark. (ru_maxrss would not do: Linux
            # carries the parent's peak into a child through fork/exec.)
            "hwm_mib": round(_status_kib("VmHWM") / mib, 1),
            "at_10_mib": at(0.1), "at_50_mib": at(0.5), "at_90_mib": at(0.9),
            "final_mib": round(samples[-1][1] / mib, 1), "samples": len(samples),
        }


def _status_kib(name: str) -> int:
    """A ``Vm*`` line of /proc/self/status (KiB), e.g. VmRSS now or VmHWM (its peak)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    return 0


def _child_streamtask(spec: RunSpec) -> RunResult:
    clock = Clock()
    app = bench_app(spec.app, spec.bootstrap, _timed(clock, _noop))
    events = EventBus()
    events.subscribe(_CommitProgress(clock, spec.tasks), inline=True)  # stops at once
    settings = WorkerSettings(concurrency=spec.concurrency)
    if spec.observed:
        from streamtask.ops.metrics import observed_worker
        from streamtask.ops.trail import TrailWriter

        # The server stays up until the child exits, as a worker's does.
        worker, _server = observed_worker(app, [WORK], settings, port=0, addr="127.0.0.1",
                                          events=events)
        worker.events.subscribe(TrailWriter(app, worker.worker_id))
    else:
        worker = Worker(app, [WORK], settings, events=events)
    # As `streamtask worker` does. The raw loop's side is left as is: the same settings moved
    # its CPU per task by less than the noise (measured).
    tune_for_worker()
    if spec.mode == "memory":
        with _RssSampler(lambda: worker.counter.counts[Event.TASK_SUCCEEDED]) as sampler:
            worker.run(max_tasks=spec.tasks)
        clock.ended()
        return clock.result(spec, sampler.report(spec.tasks))
    worker.run(max_tasks=spec.tasks)
    clock.ended()  # only if no commit event covered every task (it then has ended already)
    return clock.result(spec)


class _Batch:
    """One consumed batch: its positions become storable once every delivery fired."""

    __slots__ = ("error", "pending", "positions", "size")

    def __init__(self) -> None:
        self.pending = 0
        self.size = 0
        self.positions: dict[tuple[str, int], int] = {}
        self.error: Any = None

    def acknowledged(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.error = error
        self.pending -= 1


class RawLoop:
    """The reference: the simplest batched confluent-kafka loop with the worker's guarantee.

    ``consume(500)`` -> decode envelope -> (no-op handler) -> encode child envelope ->
    ``produce`` with a per-batch delivery callback; a batch's offsets are stored only when
    all its deliveries were acknowledged and every earlier batch was stored; stored offsets
    are committed every second and synchronously at the end. Same consumer and producer
    settings as the worker (:mod:`streamtask.kafka` defaults).
    """

    def __init__(self, app: App, group: str, clock: Clock) -> None:
        self.app, self.clock = app, clock
        self.codec = app.codec
        self.sink = app.get_stage(SINK)
        self.consumer = kafka.consumer(app.kafka, group)
        self.producer = kafka.producer(app.kafka)
        self.unacked: deque[_Batch] = deque()
        self.in_flight = 0
        self.done = 0
        self.handled = 0

    def run(self, tasks: int) -> None:
        consumer, producer = self.consumer, self.producer
        consumer.subscribe([self.app.get_stage(WORK).topic],
                           on_assign=lambda *_: say("ready"))
        self.clock.subscribed = time.perf_counter()
        next_commit = time.monotonic() + RAW_COMMIT_INTERVAL
        while self.done < tasks:
            if self.in_flight < RAW_MAX_UNACKED:
                messages = consumer.consume(RAW_BATCH, RAW_CONSUME_TIMEOUT)
                if messages:
                    self.clock.received()
                    self._handle(messages)
                producer.poll(0)
            else:
                producer.poll(0.005)
            self._store_acknowledged()
            if time.monotonic() >= next_commit:
                consumer.commit(asynchronous=True)
                next_commit = time.monotonic() + RAW_COMMIT_INTERVAL
                say("progress", self.done)
        consumer.commit(asynchronous=False)
        self.clock.ended()
        say("progress", self.done)
        consumer.close()
        producer.flush(10)

    def _handle(self, messages: list[Any]) -> None:
        decode, encode, produce = self.codec.decode, self.codec.encode, self.producer.produce
        sink_topic, sink_name = self.sink.topic, self.sink.name
        batch = _Batch()
        ack = batch.acknowledged
        for message in messages:
            error = message.error()
            if error is not None:
                kafka.raise_for(error, "consume")
            parent = decode(message.value())
            result = _noop(parent)
            child = Task.new(sink_name, result, key=parent.key, run_id=parent.run_id,
                             parent_id=parent.id, headers=parent.headers)
            value = encode(child)
            # The baseline is the bare client, so it calls it directly (not kafka.produce).
            while True:
                try:
                    produce(sink_topic, value, child.key or child.id, on_delivery=ack)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            batch.pending += 1
            batch.positions[(message.topic(), message.partition())] = message.offset() + 1
        batch.size = len(messages)
        self.in_flight += batch.size
        self.handled += batch.size
        self.unacked.append(batch)

    def _store_acknowledged(self) -> None:
        unacked = self.unacked
        while unacked and unacked[0].pending == 0:
            batch = unacked.popleft()
            if batch.error is not None:
                raise kafka.delivery_error(batch.error, self.sink.topic)
            self.consumer.store_offsets(offsets=[
                kafka.TopicPartition(topic, partition, offset)
                for (topic, partition), offset in batch.positions.items()])
            self.in_flight -= batch.size
            self.done += batch.size


def _child_raw(spec: RunSpec) -> RunResult:
    app = bench_app(spec.app, spec.bootstrap)
    clock = Clock()
    loop = RawLoop(app, spec.group, clock)
    if spec.mode == "memory":
        with _RssSampler(lambda: loop.handled) as sampler:
            loop.run(spec.tasks)
        return clock.result(spec, sampler.report(spec.tasks))
    loop.run(spec.tasks)
    return clock.result(spec)


def child_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of a measured run: ``python -c '...child_main()' '<RunSpec JSON>'``."""
    args = sys.argv[1:] if argv is None else argv
    spec = RunSpec(**json.loads(args[0]))
    if spec.mode == "peers":
        from streamtask.dev.bench_peers import run_child  # it builds on this module

        result = run_child(spec)
    elif spec.mode == "latency":
        from streamtask.dev.bench_latency import run_child as run_latency

        result = run_latency(spec)
    elif spec.mode == "sender":
        from streamtask.dev.bench_latency import send_open_loop

        result = send_open_loop(spec)
    else:
        result = _child_streamtask(spec) if spec.side == "streamtask" else _child_raw(spec)
    say("result", json.dumps(asdict(result)))


# -- the parent: spawn, follow, check ----------------------------------------------------------


def child_command(spec: RunSpec) -> list[str]:
    code = "from streamtask.dev.bench import child_main; child_main()"
    return [sys.executable, "-c", code, json.dumps(asdict(spec))]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _follow(proc: subprocess.Popen[str], on_progress: Callable[[int], None],
            on_ready: Callable[[], None]) -> RunResult | None:
    result: RunResult | None = None
    assert proc.stdout is not None
    for line in proc.stdout:
        kind, _, rest = line.rstrip("\n").partition(" ")
        if kind == "progress":
            on_progress(int(rest))
        elif kind == "ready":
            on_ready()
        elif kind == "result":
            result = RunResult(**json.loads(rest))
    return result


def stderr_tail(stream: IO[bytes], lines: int = 25) -> str:
    stream.seek(0)
    return "\n".join(stream.read().decode(errors="replace").splitlines()[-lines:])


def spawn_run(spec: RunSpec, on_progress: Callable[[int], None] = lambda _n: None,
              on_ready: Callable[[], None] = lambda: None, *,
              wrap: Sequence[str] = ()) -> RunResult:
    """Run ``spec`` in a fresh child process and return what it measured.

    ``wrap`` prefixes the child's command line, e.g. with a profiler that runs it.
    """
    with tempfile.TemporaryFile() as stderr, subprocess.Popen(
            [*wrap, *child_command(spec)], stdout=subprocess.PIPE, stderr=stderr, text=True,
            env=child_env()) as proc:
        try:
            result = _follow(proc, on_progress, on_ready)
        finally:
            code = proc.wait()
        if code != 0 or result is None:
            raise BenchError(f"the {spec.side} {spec.mode} run exited with code {code}:\n"
                             f"{stderr_tail(stderr)}")
    return result


def measured_run(bootstrap: str, mode: Mode, side: Side, tasks: int, concurrency: int,
                 progress: ProgressFn = no_progress, *, label: str = "",
                 observed: bool = False) -> RunResult:
    """Fresh topics, filled with ``tasks``; one child drains them; check; delete the topics."""
    app = fresh_app(bootstrap, side)
    group = app.get_stage(WORK).group if side == "streamtask" else f"{app.name}.raw"
    try:
        fill(app, tasks, progress)
        title = f"{label}{side} drains {tasks:,}"
        progress(title, 0, tasks)
        result = spawn_run(RunSpec(mode, side, bootstrap, app.name, group, tasks, concurrency,
                                   observed),
                           lambda n: progress(title, n, tasks))
        result.committed, result.sink_records = durable(app, group)
    finally:
        delete_topics(app)
    if result.committed < tasks or result.sink_records < tasks:
        raise BenchError(f"{side} run on {app.name}: {result.committed} offsets committed and "
                         f"{result.sink_records} results produced, expected {tasks} each")
    return result


# -- scenarios -----------------------------------------------------------------------------


def warmup_size(tasks: int) -> int:
    return max(1, min(tasks // 4, WARMUP_TASKS))


def drain(bootstrap: str, tasks: int = DEFAULT_TASKS, pairs: int = 5, concurrency: int = 8,
          progress: ProgressFn = no_progress, warmup: bool = True,
          observed: bool = False) -> DrainReport:
    """Interleaved pairs (A B, B A, ...) after a warm-up run of each side; ``observed``: the
    streamtask side serves metrics and writes the execution trail (what they cost is the
    ratio's change)."""
    if warmup:
        for side in SIDES:
            measured_run(bootstrap, "drain", side, warmup_size(tasks), concurrency,
                         progress, label="warm-up: ", observed=observed)
    runs: dict[Side, list[RunResult]] = {side: [] for side in SIDES}
    for pair in range(pairs):
        order = SIDES if pair % 2 == 0 else SIDES[::-1]
        for side in order:
            runs[side].append(measured_run(bootstrap, "drain", side, tasks, concurrency,
                                           progress, label=f"pair {pair + 1}/{pairs}: ",
                                           observed=observed))
    a, b = runs["streamtask"], runs["raw"]
    ratios = [x.rate / y.rate for x, y in zip(a, b, strict=True)]
    cpu_ratios = [x.cpu_us_per_task / y.cpu_us_per_task for x, y in zip(a, b, strict=True)]
    return DrainReport(
        tasks=tasks, pairs=pairs, concurrency=concurrency,
        streamtask=summarise(a), raw=summarise(b),
        ratios=[round(r, 3) for r in ratios], ratio=statistics.median(ratios),
        cpu_ratio=statistics.median(cpu_ratios),
        runs=[r.summary() for pair in zip(a, b, strict=True) for r in pair])


def memory(bootstrap: str, tasks: int = DEFAULT_MEMORY_TASKS, concurrency: int = 8,
           progress: ProgressFn = no_progress) -> MemoryReport:
    """RSS of each side's process while it drains a ``tasks`` backlog."""
    sides: dict[str, dict[str, Any]] = {}
    for side in SIDES:
        run = measured_run(bootstrap, "memory", side, tasks, concurrency, progress,
                           label="memory: ")
        sides[side] = {**run.extra, "rate": round(run.rate, 1),
                       "cpu_us_per_task": round(run.cpu_us_per_task, 2)}
    return MemoryReport(tasks=tasks, concurrency=concurrency, sides=sides)


def _source_revision() -> str:
    """The git commit of the streamtask being measured (best effort)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=False,
                              cwd=Path(__file__).resolve().parent.parent)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import confluent_kafka
    import fastavro

    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "confluent_kafka": importlib.metadata.version("confluent-kafka"),
            "librdkafka": confluent_kafka.libversion()[0], "fastavro": fastavro.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "source": _source_revision(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
