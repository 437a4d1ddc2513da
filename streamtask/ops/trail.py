"""The execution trail of each run, kept in Kafka: ``<app>.events``, partitioned by run id.

Workers write what happened to every task (run id, task and parent ids, stage, attempt,
outcome: succeeded, failed, timed out, retried, dead-lettered; error, start and end times) as
Avro ``streamtask.TaskEvents`` records. :class:`TrailWriter` is a subscriber of the worker's
events that buffers them on the loop's thread and, every ``flush_interval`` seconds, produces
one record per partition holding the events of the runs that hash to it: one record per
task would cost an Avro encode and a produce per task, about a sixth of a no-op task's CPU
(measured). The trail is observability, not state: its records are produced without
waiting, and a lost one never holds a task back.

Finding a run is cheap without an index. Run ids are task ids, which embed their creation
time in their first 12 hex digits (milliseconds, as UUIDv7 does), and a run's records all go
to the partition ``crc32(run id) % partitions``. :func:`read_run` asks the broker for the
first offset at the run's start time in that one partition (``offsets_for_times``) and reads
from there to the partition's end.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streamtask import clock
from streamtask.errors import KafkaError, ProduceRejected
from streamtask.events import Event
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import _create, events_topic
from streamtask.model.app import App
from streamtask.model.registry import Schema

log = logging.getLogger("streamtask.trail")
SCHEMA = "streamtask.TaskEvents"
CLOCK_SKEW_MS = 60_000
"""How far before a run's start a lookup begins: producers' clocks differ."""
_OUTCOMES = {Event.TASK_SUCCEEDED: "succeeded", Event.TASK_FAILED: "failed",
             Event.TASK_TIMED_OUT: "timed_out", Event.TASK_RETRIED: "retried",
             Event.TASK_DEAD_LETTERED: "dead_lettered"}
OUTCOMES = tuple(_OUTCOMES.values())


def topic_of(app: App) -> str:
    return events_topic(app).name


def partition_of(run_id: str, partitions: int) -> int:
    return zlib.crc32(run_id.encode()) % partitions


def started_ms(run_id: str) -> int | None:
    """When the run began, from the time its id embeds (None for ids without one)."""
    try:
        ms = int(run_id[:12], 16)
    except ValueError:
        return None
    return ms if len(run_id) == 32 and 1_500_000_000_000 < ms < 4_000_000_000_000 else None


class TrailWriter:
    """Subscriber that writes a worker's task events to ``<app>.events`` (see module doc)."""

    def __init__(self, app: App, worker: str, flush_interval: float = 0.2) -> None:
        app.transport.wait_for_cluster(app.kafka)
        self._app = app
        self._worker = worker
        self._topic = topic_of(app)
        self._schema: Schema = app.registry.get(SCHEMA)
        self._flush_interval = flush_interval
        self._buffer: list[dict[str, Any]] = []
        self._next_flush = time.monotonic() + flush_interval
        client = app.transport.admin(app.kafka)
        existing = client.list_topics(timeout=app.kafka.connect_timeout).topics
        if self._topic in existing:
            self._partitions = len(existing[self._topic].partitions)
        else:  # new metadata takes a moment to show the topic: use what we asked for
            spec = events_topic(app)
            _create(client, [spec], app.kafka.connect_timeout)
            self._partitions = spec.partitions
        self._max_record = kafka.max_record_bytes(app.kafka) - 1024  # headroom for framing
        self._producer = app.transport.producer(app.kafka, **{"linger.ms": 100,
                                                      "enable.idempotence": False, "acks": 1})

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        outcome = _OUTCOMES.get(event)
        if outcome is not None and fields.get("run_id"):
            # The worker's time when the outcome was settled: this writer runs detached
            # and may take the event much later (a slow broker), so the clock now is not it.
            ended = fields.get("at") or clock.now_ms()
            self._buffer.append({
                "run_id": fields["run_id"], "task_id": fields.get("task_id"),
                "parent_id": fields.get("parent_id"),
                "stage": fields["stage"], "attempt": fields.get("attempt") or 1,
                "outcome": outcome, "error": fields.get("error"),
                "started": ended - round(fields.get("seconds", 0.0) * 1000), "ended": ended})
        elif event is Event.WORKER_STOPPED:
            self.flush(final=True)
            return
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Produce the buffered events, one record per partition (wait for them if ``final``)."""
        self._next_flush = time.monotonic() + self._flush_interval
        buffered, self._buffer = self._buffer, []
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for event in buffered:
            by_partition.setdefault(partition_of(event["run_id"], self._partitions),
                                    []).append(event)
        for partition, events in by_partition.items():
            for value in self._records(events):
                try:
                    kafka.produce(self._producer, self._topic, value, partition=partition)
                except ProduceRejected as refused:  # the trail is a view: never stop the work
                    log.warning("trail.dropped %d bytes of task events: %s", len(value), refused)
        self._producer.poll(0)
        if final:
            self._producer.flush(10.0)

    def _records(self, events: list[dict[str, Any]]) -> Iterator[bytes]:
        """The events as records under the producer's size limit (halved until they fit)."""
        value = self._app.registry.encode(
            self._schema, {"worker": self._worker, "events": events}, validate=False)
        if len(value) <= self._max_record or len(events) == 1:
            yield value
            return
        half = len(events) // 2
        yield from self._records(events[:half])
        yield from self._records(events[half:])


# -- reading -------------------------------------------------------------------------------


@dataclass
class Attempt:
    attempt: int
    outcome: str
    started: int
    ended: int
    error: str | None = None
    worker: str = ""


@dataclass
class TaskTrail:
    """One task of a run: its stage, parent, attempts and where it ended."""

    task_id: str
    stage: str
    parent_id: str | None
    attempts: list[Attempt] = field(default_factory=list)
    dead_letter: str | None = None
    """The reason/error when the task was dead-lettered."""
    children: list[TaskTrail] = field(default_factory=list)


def _reader(app: App) -> Any:
    return kafka.consumer(app.kafka, f"{app.name}.events-reader",
                          **{"enable.partition.eof": True, "isolation.level": "read_uncommitted"})


def _records(app: App, consumer: Any, starts: dict[int, int],
             partitions: int) -> Iterator[dict[str, Any]]:
    """Decoded records of ``<app>.events`` from each partition's start offset to its end."""
    from streamtask.ops.deadletters import read_spans, watermarks

    topic = topic_of(app)
    marks = watermarks(consumer, topic, partitions, app.kafka.connect_timeout)
    spans = {(topic, p): (max(start, marks[p][0]), marks[p][1]) for p, start in starts.items()}
    for batch in read_spans(consumer, spans):
        for message in batch:
            record, _writer = app.registry.decode(message.value())
            yield record


def _start_offsets(consumer: Any, topic: str, partitions: list[int], at_ms: int,
                   timeout: float) -> dict[int, int]:
    found = kafka.retrying(lambda: consumer.offsets_for_times(
        [kafka.TopicPartition(topic, p, max(0, at_ms)) for p in partitions], timeout=timeout),
        f"finding offsets of {topic} at {at_ms}", time.monotonic() + timeout)
    # -1: no record that late; the span then starts at the end and reads nothing.
    return {tp.partition: tp.offset if tp.offset >= 0 else 1 << 62 for tp in found}


def read_run(app: App, run_id: str) -> list[dict[str, Any]]:
    """Every event of ``run_id``, read from one partition from the run's start time on."""
    topic = topic_of(app)
    consumer = _reader(app)
    try:
        partitions = _partitions(consumer, topic, app.kafka.connect_timeout)
        partition = partition_of(run_id, partitions)
        began = started_ms(run_id)
        at = began - CLOCK_SKEW_MS if began is not None else 0
        starts = _start_offsets(consumer, topic, [partition], at, app.kafka.connect_timeout)
        return [{**event, "worker": record["worker"]}
                for record in _records(app, consumer, starts, partitions)
                for event in record["events"] if event["run_id"] == run_id]
    finally:
        consumer.close()


def read_since(app: App, since_ms: int) -> list[dict[str, Any]]:
    """Every record (one worker's events of one flush) written since ``since_ms``."""
    topic = topic_of(app)
    consumer = _reader(app)
    try:
        partitions = _partitions(consumer, topic, app.kafka.connect_timeout)
        starts = _start_offsets(consumer, topic, list(range(partitions)), since_ms,
                                app.kafka.connect_timeout)
        return list(_records(app, consumer, starts, partitions))
    finally:
        consumer.close()


def _partitions(consumer: Any, topic: str, timeout: float) -> int:
    try:
        topics = consumer.list_topics(timeout=timeout).topics
    except kafka.KafkaException as exc:
        raise kafka.mapped(exc, "listing topics failed") from exc
    if topic not in topics:
        raise KafkaError(f"topic {topic} does not exist: no worker with the execution trail "
                         "on has run for this app")
    return len(topics[topic].partitions)


def tree(events: list[dict[str, Any]]) -> list[TaskTrail]:
    """The run's tasks by parent (roots first), each with its attempts in order."""
    tasks: dict[str, TaskTrail] = {}
    for event in sorted(events, key=lambda e: (e["ended"], e["attempt"])):
        task_id = event["task_id"] or "-"
        task = tasks.setdefault(task_id, TaskTrail(task_id, event["stage"], event["parent_id"]))
        outcome = event["outcome"]
        if outcome == "dead_lettered":
            task.dead_letter = event["error"] or "dead-lettered"
        elif outcome != "retried":
            task.attempts.append(Attempt(event["attempt"], outcome, event["started"],
                                         event["ended"], event["error"], event["worker"]))
    roots: list[TaskTrail] = []
    for task in tasks.values():
        parent = tasks.get(task.parent_id or "")
        (parent.children if parent is not None else roots).append(task)
    return roots
