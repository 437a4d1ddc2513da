"""Reading dead letters back, and replaying them into their stage (``streamtask dlq``).

Reading never joins a consumer group and never commits: partitions are assigned by hand
and read from fixed start offsets up to the high watermarks seen when the read began, so
every read terminates even while a stage keeps dead-lettering.

A replay is at-least-once and resumable. It reads the DLQ with a consumer group of its own,
``<stage group>.dlq-replay.<hash of the filters>``, produces a batch, waits until the broker
acknowledged every record of it, and only then commits the batch's DLQ offsets to that
group; a rerun with the same filters continues after the last committed batch. The loop
guard counts replays in the ``streamtask-replays`` header, which the worker carries from the
replayed record into its next dead letter: a dead letter already replayed ``max_replays``
times is *parked* on ``<dlq topic>.parked`` instead of being replayed again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from confluent_kafka import KafkaError as RdKafkaError

from streamtask.errors import ConfigurationError, DecodeError, DeliveryFailed, KafkaError
from streamtask.kafka import clients as kafka
from streamtask.kafka import headers as dl
from streamtask.kafka.topics import DLQ_RETENTION_MS, TopicSpec, _create
from streamtask.model.app import App, Stage
from streamtask.model.envelope import EnvelopeCodec, Task
from streamtask.worker.job import TopicPartition

log = logging.getLogger("streamtask.dlq")
Span = tuple[int, int]
"""Offsets ``[start, end)`` of one partition to read."""

CLOCK_SKEW_MS = 60_000
"""How far before ``--since`` a replay starts reading: record timestamps and the dead-at
header come from the same worker but not the same instant."""
STALL_SECONDS = 30.0
FLUSH_SECONDS = 60.0
BATCH = 200


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter with its task decoded, or why the task cannot be decoded."""

    record: dl.DeadLetterRecord
    task: Task | None
    problem: str | None = None
    """Why ``task`` is None (undecodable bytes, or a task of another type): not replayable."""


def record_of(message: Any) -> dl.DeadLetterRecord:
    return dl.DeadLetterRecord.from_message(message.topic(), message.partition(),
                                            message.offset(), message.key(), message.value(),
                                            message.headers())


def decode(stage: Stage, codec: EnvelopeCodec, record: dl.DeadLetterRecord) -> DeadLetter:
    """The dead letter with its task decoded, if it is a task ``stage`` can run again."""
    if record.value_omitted is not None:
        return DeadLetter(record, None, f"value omitted: its {record.value_omitted} bytes did "
                                        "not fit in the dead letter")
    if record.value is None:
        return DeadLetter(record, None, "null value")
    try:
        # The attempt that failed last (the record is the task's record as first sent).
        task = codec.decode(record.value, attempt=record.attempts or None)
    except DecodeError as error:
        return DeadLetter(record, None, f"undecodable: {error}")
    if task.type != stage.name:
        return DeadLetter(record, None, f"a task of type {task.type!r}, not {stage.name!r}")
    return DeadLetter(record, task)


# -- reading -------------------------------------------------------------------------------


def _reader(app: App, group: str) -> Any:
    """A consumer that reports partition ends; it is assigned partitions, never subscribed."""
    return kafka.consumer(app.kafka, group, **{"enable.partition.eof": True})


def partition_counts(consumer: Any, timeout: float) -> dict[str, int]:
    """Every topic of the cluster with its partition count."""
    try:
        topics = consumer.list_topics(timeout=timeout).topics
    except kafka.KafkaException as exc:
        raise kafka.mapped(exc, "listing topics failed") from exc
    return {name: len(meta.partitions) for name, meta in topics.items()}


def watermarks(consumer: Any, topic: str, partitions: int, timeout: float) -> dict[int, Span]:
    """Low and high watermark of each partition of ``topic``, read from the broker now."""
    marks = {}
    for partition in range(partitions):
        tp = kafka.TopicPartition(topic, partition)
        try:
            marks[partition] = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
        except kafka.KafkaException as exc:
            raise kafka.mapped(exc, f"reading the offsets of {topic}[{partition}]") from exc
    return marks


def read_spans(consumer: Any, spans: dict[TopicPartition, Span],
               batch: int = BATCH) -> Iterator[list[Any]]:
    """Yield batches of the records in each partition's span, in offset order per partition.

    Ends once every partition reached its span's end. Raises KafkaError if nothing arrives
    for ``STALL_SECONDS`` while spans remain (records deleted under us, a broker gone).
    """
    pending = {tp: end for tp, (start, end) in spans.items() if start < end}
    if not pending:
        return
    consumer.assign([kafka.TopicPartition(t, p, spans[(t, p)][0]) for t, p in pending])
    last_progress = time.monotonic()
    while pending:
        out = []
        for message in consumer.consume(batch, 0.5):
            tp = (message.topic(), message.partition())
            end = pending.get(tp)
            if _reached_end(message, end):
                pending.pop(tp, None)
            elif end is not None and message.error() is None and message.offset() < end:
                out.append(message)
                if message.offset() + 1 >= end:
                    pending.pop(tp)
        if out:
            last_progress = time.monotonic()
            yield out
        elif time.monotonic() - last_progress > STALL_SECONDS:
            raise KafkaError(f"reading {', '.join(f'{t}[{p}]' for t, p in pending)} stalled "
                             f"for {STALL_SECONDS:.0f}s before reaching the end")


def _reached_end(message: Any, end: int | None) -> bool:
    error = message.error()
    if error is None:
        return False
    if error.code() == RdKafkaError._PARTITION_EOF:
        return end is None or message.offset() >= end
    if error.fatal():
        kafka.raise_for(error, "reading dead letters failed")
    log.warning("consumer error while reading dead letters: %s", error.str())
    return False


@dataclass(frozen=True)
class StageCount:
    """How many dead letters a stage's DLQ holds now (None: the topic does not exist)."""

    stage: str
    topic: str
    dead: int | None
    parked: int | None


def counts(app: App, stages: Sequence[Stage]) -> list[StageCount]:
    """Records currently held by each stage's DLQ and parked topic (high - low watermark)."""
    consumer = _reader(app, f"{app.name}.dlq-inspect")
    try:
        known = partition_counts(consumer, app.kafka.connect_timeout)

        def held(topic: str) -> int | None:
            if topic not in known:
                return None
            marks = watermarks(consumer, topic, known[topic], app.kafka.connect_timeout)
            return sum(high - low for low, high in marks.values())

        return [StageCount(s.name, s.dlq_topic, held(s.dlq_topic), held(parked_topic(s)))
                for s in stages]
    finally:
        consumer.close()


def recent(app: App, stages: Sequence[Stage], limit: int) -> list[DeadLetter]:
    """The ``limit`` most recent dead letters of the stages, oldest first (by dead-at time)."""
    consumer = _reader(app, f"{app.name}.dlq-inspect")
    by_topic = {stage.dlq_topic: stage for stage in stages}
    try:
        known = partition_counts(consumer, app.kafka.connect_timeout)
        spans: dict[TopicPartition, Span] = {}
        for topic in (t for t in by_topic if t in known):
            marks = watermarks(consumer, topic, known[topic], app.kafka.connect_timeout)
            spans.update({(topic, p): (max(low, high - limit), high)
                          for p, (low, high) in marks.items()})
        letters = [decode(by_topic[m.topic()], app.codec, record_of(m))
                   for batch in read_spans(consumer, spans) for m in batch]
    finally:
        consumer.close()
    letters.sort(key=lambda x: (x.record.dead_at, x.record.dlq_topic, x.record.dlq_partition,
                                x.record.dlq_offset))
    return letters[-limit:]


def parked_topic(stage: Stage) -> str:
    return f"{stage.dlq_topic}.parked"


# -- filters -------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_since(text: str, now_ms: int) -> int:
    """Epoch ms of ``text``: relative to now (``90s``, ``10m``, ``2h``, ``1d``, ``1w``) or ISO-8601.

    An ISO time without a zone is local time. Raises ConfigurationError for anything else.
    """
    relative = _RELATIVE.match(text)
    if relative:
        return now_ms - round(float(relative.group(1)) * _UNIT_MS[relative.group(2)])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"--since {text!r} is neither an ISO-8601 time (2026-01-31T12:00:00Z) nor a "
            "relative one (30s, 10m, 2h, 1d, 1w)") from None
    return round(moment.timestamp() * 1000)


def error_type_matches(actual: str, wanted: str) -> bool:
    """``wanted`` names the error exactly or is its dotted suffix (``ValueError``)."""
    return actual == wanted or actual.endswith("." + wanted)


@dataclass(frozen=True)
class Filter:
    """Which dead letters a replay takes; the filters also name the replay's group.

    ``key`` and ``positions`` serve the web console: a replay of the dead letters with one
    key, or of exactly the ones picked on the page (``(partition, offset)`` in the DLQ).
    """

    error_type: str | None = None
    since: str | None = None
    """As the user wrote it: the hash stays stable for relative times like ``2h``."""
    since_ms: int | None = None
    key: str | None = None
    positions: frozenset[tuple[int, int]] | None = None

    @classmethod
    def build(cls, error_type: str | None, since: str | None, now_ms: int, *,
              key: str | None = None,
              positions: frozenset[tuple[int, int]] | None = None) -> Filter:
        since_ms = parse_since(since, now_ms) if since is not None else None
        return cls(error_type or None, since, since_ms, key or None, positions or None)

    def matches(self, record: dl.DeadLetterRecord) -> bool:
        if self.error_type is not None and not error_type_matches(record.error_type,
                                                                  self.error_type):
            return False
        if self.key is not None and record.key != self.key.encode():
            return False
        if self.positions is not None and \
                (record.dlq_partition, record.dlq_offset) not in self.positions:
            return False
        return self.since_ms is None or record.dead_at >= self.since_ms

    def narrow(self, spans: dict[TopicPartition, Span]) -> dict[TopicPartition, Span]:
        """``spans`` cut to the partitions and offsets ``positions`` picks (all without)."""
        if self.positions is None:
            return spans
        out: dict[TopicPartition, Span] = {}
        for (topic, partition), (start, end) in spans.items():
            picked = [offset for p, offset in self.positions if p == partition]
            if picked:
                out[(topic, partition)] = (max(start, min(picked)), min(end, max(picked) + 1))
        return out

    @property
    def fingerprint(self) -> str:
        """8 hex digits, stable across runs with the same filter options."""
        fields: dict[str, Any] = {"error_type": self.error_type, "since": self.since}
        if self.key is not None:  # only when set: older replays' groups keep their names
            fields["key"] = self.key
        if self.positions is not None:
            fields["positions"] = sorted(self.positions)
        text = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(text).hexdigest()[:8]


# -- replay --------------------------------------------------------------------------------


class TokenBucket:
    """At most ``rate`` acquisitions per second (bursts of one); waits by sleeping, never spins."""

    def __init__(self, rate: float, sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ConfigurationError(f"rate {rate} must be a positive number of records/s")
        self.rate = rate
        self._sleep = sleep
        self._clock = clock
        self._tokens = 1.0
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(1.0, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self) -> None:
        """Take one token, first sleeping until one is available (``sleep`` may wake early)."""
        self._refill()
        while self._tokens < 1.0:
            self._sleep((1.0 - self._tokens) / self.rate)
            self._refill()
        self._tokens -= 1.0


class Outcome(StrEnum):
    REPLAYED = "replayed"
    SKIPPED = "skipped"
    PARKED = "parked"
    UNDECODABLE = "undecodable"


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay and how fast; validated when built."""

    filter: Filter = field(default_factory=Filter)
    limit: int | None = None
    rate: float | None = None
    dry_run: bool = False
    max_replays: int = 3

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigurationError(f"--limit {self.limit} must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ConfigurationError(f"--rate {self.rate} must be a positive number of "
                                     "records per second")
        if self.max_replays < 0:
            raise ConfigurationError(f"--max-replays {self.max_replays} must be 0 or more")


@dataclass
class ReplaySummary:
    """What a replay did (or, dry, would do) to the dead letters it read."""

    group: str
    dlq_topic: str
    parked_topic: str
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    stopped_at_limit: bool = False


OnRecord = Callable[[Outcome, DeadLetter], None]
OnProgress = Callable[[int, int], None]


def replay_group(stage: Stage, options: ReplayOptions) -> str:
    return f"{stage.group}.dlq-replay.{options.filter.fingerprint}"


class Replay:
    """One run of ``dlq replay`` over a stage's DLQ; see the module docstring."""

    def __init__(self, app: App, stage: Stage, options: ReplayOptions, *,
                 on_record: OnRecord = lambda outcome, letter: None,
                 on_progress: OnProgress = lambda done, total: None) -> None:
        self.app = app
        self.stage = stage
        self.options = options
        self.summary = ReplaySummary(replay_group(stage, options), stage.dlq_topic,
                                     parked_topic(stage))
        self._on_record = on_record
        self._on_progress = on_progress
        self._delivery_error: DeliveryFailed | None = None
        self._parked_ready = False
        self._partitions = 0
        self._bucket: TokenBucket | None = None

    def run(self) -> ReplaySummary:
        """Replay the matching dead letters up to the DLQ's current end; return the summary."""
        kafka.wait_for_cluster(self.app.kafka)
        self._consumer = _reader(self.app, self.summary.group)
        self._producer = None if self.options.dry_run else kafka.producer(self.app.kafka)
        if self._producer is not None and self.options.rate is not None:
            # Waiting for a token serves delivery callbacks instead of sleeping idle.
            self._bucket = TokenBucket(self.options.rate, sleep=self._producer.poll)
        try:
            spans = self._spans()
            total = sum(end - start for start, end in spans.values())
            self._on_progress(0, total)
            self._replay_spans(spans, total)
        finally:
            self._consumer.close()
            if self._producer is not None:
                self._producer.flush(FLUSH_SECONDS)
        return self.summary

    def _spans(self) -> dict[TopicPartition, Span]:
        """Per partition: from the group's committed offset (else ``--since``, else the
        start) to the high watermark now."""
        timeout = self.app.kafka.connect_timeout
        topic = self.stage.dlq_topic
        self._partitions = partition_counts(self._consumer, timeout).get(topic, 0)
        if not self._partitions:
            raise ConfigurationError(
                f"the dead-letter topic {topic} does not exist; create the app's topics with "
                f"`streamtask topics ensure <module>:{self.app.name}`")
        marks = watermarks(self._consumer, topic, self._partitions, timeout)
        tps = [kafka.TopicPartition(topic, p) for p in range(self._partitions)]
        since_ms = self.options.filter.since_ms
        try:
            starts = {tp.partition: tp.offset
                      for tp in self._consumer.committed(tps, timeout=timeout)}
            if since_ms is not None:
                for tp in tps:
                    tp.offset = max(0, since_ms - CLOCK_SKEW_MS)
                for tp in self._consumer.offsets_for_times(tps, timeout=timeout):
                    first = tp.offset if tp.offset >= 0 else marks[tp.partition][1]
                    starts[tp.partition] = max(starts[tp.partition], first)
        except kafka.KafkaException as exc:
            raise kafka.mapped(exc, f"reading the replay's position on {topic}") from exc
        spans = {(topic, p): (max(starts[p], low), high) for p, (low, high) in marks.items()}
        return self.options.filter.narrow(spans)

    def _replay_spans(self, spans: dict[TopicPartition, Span], total: int) -> None:
        """Handle the records batch by batch; commit each batch once its records are acked.

        On Ctrl-C the records handled so far are still acknowledged and committed, so a
        rerun continues right after them.
        """
        done = 0
        for batch in read_spans(self._consumer, spans):
            positions: dict[TopicPartition, int] = {}
            try:
                for message in batch:
                    if self._at_limit():
                        break
                    self.summary.counts[self._handle(message)] += 1
                    positions[(message.topic(), message.partition())] = message.offset() + 1
                    done += 1
            finally:
                self._checkpoint(positions)
            self._on_progress(done, total)
            if self.summary.stopped_at_limit:
                return

    def _at_limit(self) -> bool:
        limit = self.options.limit
        if limit is not None and self.summary.counts[Outcome.REPLAYED] >= limit:
            self.summary.stopped_at_limit = True
        return self.summary.stopped_at_limit

    def _handle(self, message: Any) -> Outcome:
        record = record_of(message)
        if not self.options.filter.matches(record):
            return Outcome.SKIPPED
        letter = decode(self.stage, self.app.codec, record)
        if letter.task is None:
            outcome = Outcome.UNDECODABLE
        elif letter.record.replays >= self.options.max_replays:
            outcome = Outcome.PARKED
            self._park(message)
        else:
            outcome = Outcome.REPLAYED
            self._replay(letter, letter.task)
        self._on_record(outcome, letter)
        return outcome

    def _replay(self, letter: DeadLetter, task: Task) -> None:
        """Back to the stage's input topic: same id and key, attempt 1, one more replay."""
        if self._producer is None:
            return
        record = letter.record
        fresh = task.with_(attempt=1, not_before=None)
        headers: dl.Headers = [(k, v) for k, v in record.carried_headers if k != dl.REPLAYS]
        headers.append((dl.REPLAYS, str(record.replays + 1).encode()))
        key = record.key if record.key is not None else (task.key or task.id)
        self._produce(self.stage.topic, self.app.codec.encode(fresh), key, headers)

    def _park(self, message: Any) -> None:
        """The dead letter, untouched, to the parked topic (same partition as in the DLQ)."""
        if self._producer is None:
            return
        if not self._parked_ready:
            spec = TopicSpec(self.summary.parked_topic, self._partitions,
                             {"retention.ms": str(DLQ_RETENTION_MS)})
            _create(kafka.admin(self.app.kafka), [spec], self.app.kafka.connect_timeout)
            self._parked_ready = True
        self._produce(self.summary.parked_topic, message.value(), message.key(),
                      message.headers() or [], partition=message.partition())

    def _produce(self, topic: str, value: bytes, key: bytes | str | None,
                 headers: Any, **where: Any) -> None:
        assert self._producer is not None

        def acknowledged(error: Any, _message: Any) -> None:
            if error is not None and self._delivery_error is None:
                self._delivery_error = kafka.delivery_error(error, topic)

        if self._bucket is not None and topic == self.stage.topic:
            self._bucket.acquire()
        kafka.produce(self._producer, topic, value, key, headers=headers,
                      on_delivery=acknowledged, **where)

    def _checkpoint(self, positions: dict[TopicPartition, int]) -> None:
        """Wait for every produced record's ack, then commit the DLQ positions (not if dry)."""
        if self._producer is None or not positions:
            return
        left = self._producer.flush(FLUSH_SECONDS)
        if self._delivery_error is not None:
            raise self._delivery_error
        if left:
            raise DeliveryFailed(f"{left} replayed record(s) were not acknowledged within "
                                 f"{FLUSH_SECONDS:.0f}s; nothing of this batch was committed, "
                                 "so a rerun replays it again")
        offsets = [kafka.TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except kafka.KafkaException as exc:
            raise kafka.mapped(exc, "committing the replay's progress failed (a rerun "
                                    "replays the last batch again)") from exc
