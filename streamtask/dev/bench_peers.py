"""The ``peers`` scenario: streamtask against what a user would pick instead of it.

Three sides drain the same content from a fresh 8-partition topic, each in a fresh child
process (the machinery of :mod:`streamtask.dev.bench`), in rounds whose order alternates
(A B C, C B A, ...), and each round's ratios are taken between runs measured minutes apart at
most:

``raw``
    The loop a user writes without a framework, around a *bare* Avro record holding the same
    content as streamtask's envelope + payload (:data:`BARE_TASK_SCHEMA`): ``consume(500)`` ->
    fastavro decode -> build the result record echoing it -> fastavro encode -> ``produce``;
    each input offset is stored only once its output was acknowledged, contiguously per
    partition, and stored offsets are committed every second.
``quix``
    Quix Streams (the ``bench`` extra, pinned), ``sdf.apply(echo).to_topic(sink)`` over the
    same bare record with Quix's own fastavro serialisers, ``processing_guarantee=
    "at-least-once"`` and ``commit_interval=1.0``: each checkpoint flushes the producer (every
    output acknowledged) before it commits the consumed offsets, the same promise. Skipped
    with a message when Quix Streams is not installed.
``streamtask``
    The default worker (``WorkerSettings()``, as ``streamtask worker`` runs it) on a no-op
    stage returning its payload (100 random bytes) with ``then=`` a sink stage.

Every side reads ``created_at`` as a plain long, as streamtask's envelope does: fastavro's
conversion of a timestamp-millis to a ``datetime`` costs about 6 µs per record on this box,
more than a quarter of the raw loop's whole budget, and would flatter streamtask.

The timed window of every side runs from its first handler call (the handler notes it; group
join and first fetch excluded) to the end of its run: final synchronous commit done and the
clients closed, the same end for all three, and none needs a hook inside the worker.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import random
import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.dev import bench
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure
from streamtask.model.app import App
from streamtask.model.envelope import Task, new_task_id
from streamtask.worker import Worker
from streamtask.worker.interpreter import tune_for_worker

__all__ = [
    "BARE_RESULT_SCHEMA",
    "BARE_TASK_SCHEMA",
    "PAYLOAD_SCHEMA",
    "QUIX_VERSION",
    "AckedPrefix",
    "Acks",
    "BareLoop",
    "PeersReport",
    "fill_for",
    "group_of",
    "peers",
    "peers_app",
    "quix_version",
    "run_child",
]

QUIX_VERSION = "3.28.1"
"""The Quix Streams version the ``bench`` extra pins and the figures were measured with."""
PAYLOAD_BYTES = 100
PROGRESS_EVERY = 5_000
PEER_SIDES: tuple[bench.Side, ...] = ("raw", "quix", "streamtask")

_HEADERS = ("tenant", "source", "trace")


def _millis(name: str) -> dict[str, Any]:
    return {"name": name, "type": {"type": "long", "logicalType": "timestamp-millis"}}


def _bare(name: str, doc: str, *, child: bool) -> dict[str, Any]:
    """The bare record of a task (a ``child`` names its parent too): the fields streamtask's
    envelope and payload carry, in one record."""
    parent = [{"name": "parent_id", "type": "string"}] if child else []
    return bench.bench_schema(name, doc, [
        {"name": "id", "type": "string"},
        *parent,
        {"name": "type", "type": "string"},
        {"name": "payload", "type": "bytes"},
        {"name": "attempt", "type": "int"},
        _millis("created_at"),
        {"name": "run_id", "type": "string"},
        {"name": "headers", "type": {"type": "map", "values": "string"}},
    ])


BARE_TASK_SCHEMA = _bare(
    "BareTask", "What streamtask's envelope + payload carry, as one bare record.", child=False)
BARE_RESULT_SCHEMA = _bare(
    "BareResult", "The result of a BareTask: what streamtask's child task of a then= stage "
                  "carries.", child=True)
PAYLOAD_SCHEMA = bench.bench_schema(
    "Blob", "The streamtask side's payload: the bare record's 100 random bytes.",
    [{"name": "data", "type": "bytes"}])


def _read_plain(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its timestamp-millis fields read as longs (same bytes on the wire)."""
    fields = [{**f, "type": f["type"]["type"]}
              if isinstance(f["type"], dict) and "logicalType" in f["type"] else f
              for f in schema["fields"]]
    return {**schema, "fields": fields}


def quix_version() -> str | None:
    """The installed Quix Streams version, or None when the ``bench`` extra is absent."""
    if importlib.util.find_spec("quixstreams") is None:
        return None
    return importlib.metadata.version("quixstreams")


QUIX_MISSING = ("Quix Streams is not installed, so its side is skipped; install the `bench` "
                f"extra (quixstreams=={QUIX_VERSION}) with `make bench-peers`, which runs this "
                "scenario in a virtual environment of its own")


# -- the content every side carries -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Content:
    id: str
    payload: bytes
    created_at: int
    headers: dict[str, str]


def _contents(tasks: int, seed: int) -> list[_Content]:
    rng = random.Random(seed)
    now = time.time_ns() // 1_000_000
    out = []
    for n in range(tasks):
        task_id = f"{rng.getrandbits(128):032x}"
        out.append(_Content(task_id, rng.randbytes(PAYLOAD_BYTES), now,
                            dict(zip(_HEADERS, ("acme", "bench", f"{n:012d}"), strict=True))))
    return out


def _bare_values(contents: Sequence[_Content]) -> list[tuple[bytes, bytes]]:
    schema = parse_schema(BARE_TASK_SCHEMA)
    values = []
    for c in contents:
        buf = io.BytesIO()
        schemaless_writer(buf, schema, {
            "id": c.id, "type": bench.WORK, "payload": c.payload, "attempt": 1,
            "created_at": c.created_at, "run_id": c.id, "headers": c.headers})
        values.append((c.id.encode(), buf.getvalue()))
    return values


def _envelope_values(app: App, contents: Sequence[_Content]) -> list[tuple[bytes, bytes]]:
    codec = app.codec
    return [(c.id.encode(), codec.encode(Task(c.id, bench.WORK, {"data": c.payload},
                                              created_at=c.created_at, headers=c.headers)))
            for c in contents]


def peers_app(name: str, bootstrap: str,
              handler: Callable[[Task], Any] | None = None) -> App:
    """``work`` (no-op, results ``then=`` ``sink``) and ``sink``, 8 partitions, Blob payloads."""
    app = App(name, kafka=KafkaSettings(bootstrap=bootstrap))
    app.stage(bench.WORK, payload=PAYLOAD_SCHEMA, partitions=bench.PARTITIONS,
              then=bench.SINK)(handler or _payload_of)
    app.stage(bench.SINK, payload=PAYLOAD_SCHEMA, partitions=bench.PARTITIONS)(_payload_of)
    return app


def _payload_of(task: Task) -> Any:
    return task.payload


def _fill(app: App, values: Sequence[tuple[bytes, bytes]],
          progress: bench.ProgressFn) -> None:
    producer = kafka.producer(app.kafka)
    topic, total = app.get_stage(bench.WORK).topic, len(values)
    for n, (key, value) in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        if n % PROGRESS_EVERY == 0:
            producer.poll(0)
            progress(f"fill {topic}", n, total)
    if producer.flush(60.0):
        raise bench.BenchError(f"filling {topic}: records still unacknowledged after 60 s")


# -- the child side: one drain ------------------------------------------------------------------


class _Handled:
    """Counts handler calls: the first starts the timed window; every few thousand, progress.

    Every side calls it once per task, so its cost (a fraction of a microsecond) is the same
    on all three.
    """

    __slots__ = ("clock", "count")

    def __init__(self, clock: bench.Clock) -> None:
        self.clock = clock
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        if self.count == 1:
            self.clock.received()
        elif self.count % PROGRESS_EVERY == 0:
            bench.say("progress", self.count)


def _echo(handled: _Handled) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The bare stage: the result record of a task, as streamtask builds a child task."""

    def echo(task: dict[str, Any]) -> dict[str, Any]:
        handled()
        return {"id": new_task_id(), "parent_id": task["id"], "type": bench.SINK,
                "payload": task["payload"], "attempt": 1,
                "created_at": time.time_ns() // 1_000_000, "run_id": task["run_id"],
                "headers": task["headers"]}

    return echo


class Acks:
    """The outputs of one consumed batch's records from one partition."""

    __slots__ = ("count", "error", "pending", "position")

    def __init__(self) -> None:
        self.pending = self.count = 0
        self.position = 0
        self.error: Any = None

    def sent(self, offset: int) -> None:
        """The output of the input record at ``offset`` was handed to the producer."""
        self.pending += 1
        self.count += 1
        self.position = offset + 1

    def acknowledged(self, error: Any, _message: Any) -> None:
        """The producer's delivery report of one of these outputs."""
        if error is not None:
            self.error = error
        self.pending -= 1


class AckedPrefix:
    """Per input partition, its batches' outputs in consumption order.

    A partition's position may be stored only once the outputs of every record before it
    were acknowledged: the longest acknowledged prefix, never past a pending output.
    """

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self._queues: dict[int, deque[Acks]] = {}

    def add(self, partition: int) -> Acks:
        """A new group for the next records consumed from ``partition``."""
        acks = Acks()
        self._queues.setdefault(partition, deque()).append(acks)
        return acks

    def take(self) -> tuple[dict[int, int], int]:
        """(storable position per partition that moved, tasks those moves cover).

        Raises :class:`~streamtask.errors.DeliveryFailed` for a failed output, whose input
        offset (and everything after it) then stays unstored.
        """
        positions, moved = {}, 0
        for partition, queue in self._queues.items():
            while queue and queue[0].pending == 0:
                acks = queue.popleft()
                if acks.error is not None:
                    raise kafka.delivery_error(acks.error, self.sink)
                positions[partition] = acks.position
                moved += acks.count
        return positions, moved


class BareLoop:
    """The bare-record reference loop (see the module docstring); same client settings as the
    worker (:mod:`streamtask.kafka` defaults), at most ``bench.RAW_MAX_UNACKED`` in flight."""

    def __init__(self, bootstrap: str, topics: tuple[str, str], group: str,
                 handled: _Handled) -> None:
        settings = KafkaSettings(bootstrap=bootstrap)
        self.source, self.sink = topics
        self.consumer = kafka.consumer(settings, group)
        self.producer = kafka.producer(settings)
        self.reader = parse_schema(_read_plain(BARE_TASK_SCHEMA))
        self.writer = parse_schema(_read_plain(BARE_RESULT_SCHEMA))
        self.echo = _echo(handled)
        self.unacked = AckedPrefix(self.sink)
        self.in_flight = 0
        self.done = 0

    def run(self, tasks: int) -> None:
        consumer, producer = self.consumer, self.producer
        consumer.subscribe([self.source], on_assign=self._assigned)
        next_commit = time.monotonic() + bench.RAW_COMMIT_INTERVAL
        while self.done < tasks:
            if self.in_flight < bench.RAW_MAX_UNACKED:
                messages = self._take()
                if messages:
                    self._handle(messages)
                producer.poll(0)
            else:
                producer.poll(0.005)
            self._store_acknowledged()
            if time.monotonic() >= next_commit:
                consumer.commit(asynchronous=True)
                next_commit = time.monotonic() + bench.RAW_COMMIT_INTERVAL
        consumer.commit(asynchronous=False)
        consumer.close()
        producer.flush(10)

    def _take(self) -> list[Any]:
        """The next batch: ``consume`` waits for a full one until its timeout (throughput)."""
        return cast(list[Any], self.consumer.consume(bench.RAW_BATCH, bench.RAW_CONSUME_TIMEOUT))

    def _assigned(self, _consumer: Any, _partitions: list[Any]) -> None:
        """Called when the group assigns partitions (the latency scenario starts its sender)."""

    def _handle(self, messages: list[Any]) -> None:
        reader, writer, echo = self.reader, self.writer, self.echo
        produce, sink = self.producer.produce, self.sink
        groups: dict[int, Acks] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                kafka.raise_for(error, "consume")
            partition = message.partition()
            acks = groups.get(partition)
            if acks is None:
                acks = groups[partition] = self.unacked.add(partition)
            result = echo(cast(dict[str, Any],
                               schemaless_reader(io.BytesIO(message.value()), reader, None)))
            buf = io.BytesIO()
            schemaless_writer(buf, writer, result)
            while True:
                try:
                    produce(sink, buf.getvalue(), message.key(), on_delivery=acks.acknowledged)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            acks.sent(message.offset())
        self.in_flight += len(messages)

    def _store_acknowledged(self) -> None:
        positions, moved = self.unacked.take()
        if positions:
            self.consumer.store_offsets(offsets=[
                kafka.TopicPartition(self.source, partition, position)
                for partition, position in positions.items()])
            self.in_flight -= moved
            self.done += moved


def _child_raw(spec: bench.RunSpec, handled: _Handled, topics: tuple[str, str]) -> None:
    BareLoop(spec.bootstrap, topics, spec.group, handled).run(spec.tasks)


def _child_quix(spec: bench.RunSpec, handled: _Handled, topics: tuple[str, str]) -> None:
    from quixstreams import Application
    from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer

    consumer_settings = {k: v for k, v in kafka.CONSUMER_DEFAULTS.items()
                         if k not in ("enable.auto.commit", "enable.auto.offset.store",
                                      "auto.offset.reset", "partition.assignment.strategy")}
    app = Application(
        broker_address=spec.bootstrap, consumer_group=spec.group,
        auto_offset_reset="earliest", commit_interval=bench.RAW_COMMIT_INTERVAL,
        processing_guarantee="at-least-once", auto_create_topics=False,
        use_changelog_topics=False, loglevel="WARNING",
        consumer_extra_config=consumer_settings,
        producer_extra_config=dict(kafka.PRODUCER_DEFAULTS))
    source = app.topic(topics[0], key_deserializer="bytes",
                       value_deserializer=AvroDeserializer(_read_plain(BARE_TASK_SCHEMA)))
    sink = app.topic(topics[1], key_serializer="bytes",
                     value_serializer=AvroSerializer(_read_plain(BARE_RESULT_SCHEMA)))
    app.dataframe(source).apply(_echo(handled)).to_topic(sink)
    app.run(count=spec.tasks, collect=False)


def _child_streamtask(spec: bench.RunSpec, handled: _Handled, _topics: tuple[str, str]) -> None:
    def noop(task: Task) -> Any:
        handled()
        return task.payload

    app = peers_app(spec.app, spec.bootstrap, noop)
    worker = Worker(app, [bench.WORK], WorkerSettings(concurrency=spec.concurrency))
    tune_for_worker()  # as `streamtask worker` does
    worker.run(max_tasks=spec.tasks)


_CHILDREN = {"raw": _child_raw, "quix": _child_quix, "streamtask": _child_streamtask}


def run_child(spec: bench.RunSpec) -> bench.RunResult:
    """One side's drain in this (fresh) process; :func:`streamtask.dev.bench.child_main` calls
    it."""
    app = peers_app(spec.app, spec.bootstrap)
    topics = (app.get_stage(bench.WORK).topic, app.get_stage(bench.SINK).topic)
    clock = bench.Clock()
    handled = _Handled(clock)
    bench.say("ready")
    _CHILDREN[spec.side](spec, handled, topics)
    clock.ended()
    bench.say("progress", handled.count)
    return clock.result(spec, {"handled": handled.count})


# -- the parent: fill, spawn, check, compare ---------------------------------------------------


def group_of(app: App, side: bench.Side) -> str:
    """The consumer group ``side`` drains ``app``'s work topic with."""
    return app.get_stage(bench.WORK).group if side == "streamtask" else f"{app.name}.{side}"


def fill_for(app: App, side: bench.Side, tasks: int, seed: int = 0,
             progress: bench.ProgressFn = bench.no_progress) -> None:
    """``tasks`` records on ``app``'s work topic, as ``side`` reads them: envelopes for
    streamtask, bare records for the others; the same content for the same ``seed``."""
    contents = _contents(tasks, seed)
    _fill(app, _envelope_values(app, contents) if side == "streamtask"
          else _bare_values(contents), progress)


def peers_run(bootstrap: str, side: bench.Side, tasks: int, concurrency: int,
              progress: bench.ProgressFn = bench.no_progress, *, label: str = "",
              seed: int = 0) -> bench.RunResult:
    """Fresh topics filled with ``tasks`` (the same content for every side given the same
    ``seed``); one child drains them; check every task is durable; delete the topics."""
    app = peers_app(f"peers-{side}-{uuid.uuid4().hex[:8]}", bootstrap)
    ensure(app)
    group = group_of(app, side)
    try:
        fill_for(app, side, tasks, seed, progress)
        title = f"{label}{side} drains {tasks:,}"
        progress(title, 0, tasks)
        spec = bench.RunSpec("peers", side, bootstrap, app.name, group, tasks, concurrency)
        result = bench.spawn_run(spec, lambda n: progress(title, n, tasks))
        result.committed, result.sink_records = bench.durable(app, group)
    finally:
        bench.delete_topics(app)
    if result.committed < tasks or result.sink_records < tasks:
        raise bench.BenchError(
            f"{side} run on {app.name}: {result.committed} offsets committed and "
            f"{result.sink_records} results produced, expected {tasks} each")
    return result


@dataclass
class PeersReport:
    tasks: int
    rounds: int
    concurrency: int
    quix: str | None
    """The Quix Streams version measured, None when its side was skipped."""
    skipped: str | None
    sides: dict[str, bench.SideSummary]
    ratios: dict[str, float]
    """Median over rounds of the per-round throughput ratios, e.g. ``"streamtask/raw"``."""
    cpu_ratios: dict[str, float]
    """The same for CPU µs per task."""
    switches_per_task: dict[str, float] = field(default_factory=dict)
    """Per side, median context switches per task (every thread's): thread wake-ups."""
    per_round: dict[str, list[float]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)


_COMPARISONS = (("streamtask", "raw"), ("streamtask", "quix"), ("quix", "raw"))


def _ratios(runs: dict[bench.Side, list[bench.RunResult]],
            metric: Callable[[bench.RunResult], float]) -> dict[str, list[float]]:
    return {f"{a}/{b}": [round(metric(x) / metric(y), 3)
                         for x, y in zip(runs[a], runs[b], strict=True)]
            for a, b in _COMPARISONS if a in runs and b in runs}


def peers(bootstrap: str, tasks: int = bench.DEFAULT_TASKS, rounds: int = 3,
          concurrency: int = 8, progress: bench.ProgressFn = bench.no_progress,
          warmup: bool = True) -> PeersReport:
    """Rounds of every side (order alternating) after a warm-up run of each."""
    quix = quix_version()
    sides = [s for s in PEER_SIDES if s != "quix" or quix is not None]
    if warmup:
        for side in sides:
            peers_run(bootstrap, side, bench.warmup_size(tasks), concurrency, progress,
                      label="warm-up: ")
    runs: dict[bench.Side, list[bench.RunResult]] = {side: [] for side in sides}
    for n in range(rounds):
        for side in sides if n % 2 == 0 else sides[::-1]:
            runs[side].append(peers_run(bootstrap, side, tasks, concurrency, progress,
                                        label=f"round {n + 1}/{rounds}: ", seed=n))
    rates = _ratios(runs, lambda r: r.rate)
    cpus = _ratios(runs, lambda r: r.cpu_us_per_task)
    return PeersReport(
        tasks=tasks, rounds=rounds, concurrency=concurrency, quix=quix,
        skipped=None if quix is not None else QUIX_MISSING,
        sides={side: bench.summarise(results) for side, results in runs.items()},
        ratios={k: statistics.median(v) for k, v in rates.items()},
        cpu_ratios={k: statistics.median(v) for k, v in cpus.items()},
        switches_per_task={side: statistics.median(r.extra["switches_per_task"]
                                                   for r in results)
                           for side, results in runs.items()},
        per_round=rates,
        runs=[runs[side][n].summary() for n in range(rounds) for side in sides])
