"""Consumer, producer and admin clients over a :class:`~streamtask.testing.log.MemoryLog`.

They implement what the worker, :class:`~streamtask.kafka.producer.TaskProducer`, the join runtime
and the trail call on confluent-kafka's clients, with librdkafka's timing rules where the
worker depends on them: rebalance callbacks, commit reports and delivery reports are served
from ``poll``/``consume``/``flush`` on the caller's thread, never from another thread; a
subscribed consumer is the only member of its group, so it gets every partition; records of
a transaction appear in the log, and its offsets are committed, only when it commits.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from streamtask.config import KafkaSettings
from streamtask.kafka import clients as kafka
from streamtask.kafka.headers import record_size
from streamtask.testing.log import TP, MemoryLog, Record, UnknownTopic, as_bytes, as_headers

Callback = Callable[[], None]


def _failure(code: int, text: str) -> kafka.KafkaException:
    """An exception as confluent-kafka raises it, so callers map it as they would."""
    return kafka.KafkaException(kafka.LibrdkafkaError(code, text))


@dataclass(frozen=True)
class PartitionMeta:
    id: int


@dataclass(frozen=True)
class TopicMeta:
    topic: str
    partitions: dict[int, PartitionMeta]


@dataclass(frozen=True)
class ClusterMeta:
    topics: dict[str, TopicMeta]


def metadata(log: MemoryLog, topic: str | None = None) -> ClusterMeta:
    """What ``list_topics`` returns: every topic (or one) with its partitions."""
    return ClusterMeta({name: TopicMeta(name, {p: PartitionMeta(p) for p in range(count)})
                        for name, count in log.topics().items()
                        if topic is None or name == topic})


class MemoryConsumer:
    """A consumer of one group; what it subscribes to is all assigned to it."""

    def __init__(self, log: MemoryLog, group: str, config: dict[str, Any]) -> None:
        self._log = log
        self.group = group
        self._on_commit: Callable[[Any, list[Any]], None] | None = config.get("on_commit")
        self._topics: list[str] = []
        self._rebalance: dict[str, Callable[[Any, list[Any]], None] | None] = {}
        self._assign_pending = False
        self._positions: dict[TP, int] = {}
        self._paused: set[TP] = set()
        self._served: deque[Callback] = deque()
        self._next = 0
        """Where the next ``consume`` starts, so no partition starves the others."""
        self._closed = False

    # -- group membership --------------------------------------------------------------------

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None,
                  on_lost: Any = None) -> None:
        """Join the group; the assignment arrives (``on_assign``) at the next poll."""
        self._topics = list(topics)
        self._rebalance = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self._assign_pending = True

    def _assign(self) -> None:
        self._assign_pending = False
        partitions = []
        for topic in self._topics:
            for partition in range(self._log.partitions(topic)):
                tp = (topic, partition)
                self._positions[tp] = self._log.committed(self.group, tp) or 0
                partitions.append(kafka.TopicPartition(topic, partition))
        callback = self._rebalance.get("assign")
        if callback is not None:
            callback(self, partitions)

    def assignment(self) -> list[kafka.TopicPartition]:
        return [kafka.TopicPartition(topic, partition) for topic, partition in self._positions]

    def pause(self, partitions: Sequence[kafka.TopicPartition]) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: Sequence[kafka.TopicPartition]) -> None:
        self._paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def close(self) -> None:
        """Leave the group, revoking the assignment first (as librdkafka does)."""
        if self._closed:
            return
        revoke = self._rebalance.get("revoke")
        if self._positions and revoke is not None:
            revoke(self, self.assignment())
        self._positions.clear()
        self._closed = True

    # -- records -----------------------------------------------------------------------------

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Record]:
        """Up to ``num_messages`` records, waiting up to ``timeout`` seconds for the first."""
        self._serve()
        deadline = time.monotonic() + (timeout if timeout >= 0 else 1e9)
        nudges = self._log.nudges
        while True:
            records = self._take(num_messages)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0 or self._log.nudges != nudges:
                return records
            with self._log.changed:
                self._log.changed.wait(remaining)
            self._serve()

    def poll(self, timeout: float | None = None) -> Record | None:
        records = self.consume(1, -1 if timeout is None else timeout)
        return records[0] if records else None

    def _serve(self) -> None:
        """Run due callbacks on the caller's thread, as librdkafka's poll does."""
        if self._closed:
            raise _failure(kafka.LibrdkafkaError._STATE, "consumer closed")
        if self._assign_pending:
            self._assign()
        while self._served:
            self._served.popleft()()

    def _take(self, limit: int) -> list[Record]:
        live = [tp for tp in self._positions if tp not in self._paused]
        taken: list[Record] = []
        if not live:
            return taken
        start = self._next % len(live)
        self._next += 1
        for tp in live[start:] + live[:start]:
            if len(taken) >= limit:
                break
            records = self._log.read(tp[0], tp[1], self._positions[tp], limit - len(taken))
            if records:
                self._positions[tp] = records[-1].offset() + 1
                taken.extend(records)
        return taken

    # -- offsets -----------------------------------------------------------------------------

    def commit(self, message: Any = None, offsets: Sequence[kafka.TopicPartition] | None = None,
               asynchronous: bool = True) -> list[kafka.TopicPartition] | None:
        """Commit ``offsets`` for the group; an asynchronous commit is reported (``on_commit``)
        at the next poll."""
        committed = list(offsets or [])
        self._log.commit(self.group, committed)
        if not asynchronous:
            return committed
        on_commit = self._on_commit
        if on_commit is not None:
            self._served.append(lambda: on_commit(None, committed))
        return None

    def committed(self, partitions: Sequence[kafka.TopicPartition],
                  timeout: float | None = None) -> list[kafka.TopicPartition]:
        return [kafka.TopicPartition(tp.topic, tp.partition,
                                     self._log.committed(self.group, (tp.topic, tp.partition))
                                     or kafka.OFFSET_INVALID)
                for tp in partitions]

    def position(self, partitions: Sequence[kafka.TopicPartition]) -> list[kafka.TopicPartition]:
        return [kafka.TopicPartition(tp.topic, tp.partition,
                                     self._positions.get((tp.topic, tp.partition),
                                                         kafka.OFFSET_INVALID))
                for tp in partitions]

    def get_watermark_offsets(self, partition: kafka.TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        return 0, self._log.end(partition.topic, partition.partition)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMeta:
        return metadata(self._log, topic)

    def consumer_group_metadata(self) -> str:
        """The group, as ``send_offsets_to_transaction`` needs it."""
        return self.group


class MemoryProducer:
    """A producer whose acknowledgements arrive at the next ``poll``/``flush``.

    With a ``transactional.id`` it buffers records between ``begin_transaction`` and
    ``commit_transaction``, which appends them and commits the offsets sent with
    ``send_offsets_to_transaction`` in one step; ``abort_transaction`` drops both.
    """

    def __init__(self, log: MemoryLog, settings: KafkaSettings, config: dict[str, Any]) -> None:
        self._log = log
        self._limit = kafka.max_record_bytes(settings)
        self._transactional = config.get("transactional.id") is not None
        self._ready = False
        self._open: list[tuple[str, bytes | None, bytes | None, Any, int, Any]] | None = None
        self._offsets: list[tuple[str, list[kafka.TopicPartition]]] = []
        self._reports: deque[tuple[Any, Record]] = deque()

    def produce(self, topic: str, value: str | bytes | None = None,
                key: str | bytes | None = None, partition: int = -1,
                on_delivery: Any = None, headers: Any = None, **_ignored: Any) -> None:
        """Append a record (or add it to the open transaction); refuse what librdkafka
        would refuse at once: an unknown topic or partition, a record over the size limit."""
        data, key_bytes, listed = as_bytes(value), as_bytes(key), as_headers(headers)
        size = record_size(data, key_bytes, list(listed or ()))
        if size > self._limit:
            raise _failure(kafka.LibrdkafkaError.MSG_SIZE_TOO_LARGE,
                           f"Broker: Message size too large ({size} > {self._limit})")
        if topic not in self._log.topics():
            raise _failure(kafka.LibrdkafkaError._UNKNOWN_TOPIC, f"Unknown topic {topic}")
        if self._transactional:
            if self._open is None:
                raise _failure(kafka.LibrdkafkaError._STATE, "no transaction is open")
            self._open.append((topic, data, key_bytes, listed, partition, on_delivery))
            return
        try:
            record = self._log.append(topic, data, key_bytes, listed, partition)
        except UnknownTopic as missing:
            raise _failure(kafka.LibrdkafkaError._UNKNOWN_PARTITION,
                           f"Unknown partition {missing}") from None
        self._reports.append((on_delivery, record))

    def poll(self, timeout: float | None = None) -> int:
        """Serve the delivery reports of records appended since the last call."""
        served = 0
        while self._reports:
            on_delivery, record = self._reports.popleft()
            if on_delivery is not None:
                on_delivery(None, record)
            served += 1
        return served

    def flush(self, timeout: float | None = None) -> int:
        self.poll(0)
        return 0

    def __len__(self) -> int:
        return len(self._reports)

    @property
    def unpublished(self) -> int:
        """Records in the open transaction (invisible until it commits)."""
        return len(self._open or ())

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMeta:
        return metadata(self._log, topic)

    # -- transactions ------------------------------------------------------------------------

    def init_transactions(self, timeout: float | None = None) -> None:
        if not self._transactional:
            raise _failure(kafka.LibrdkafkaError._NOT_CONFIGURED,
                           "The Transactional API requires transactional.id to be configured")
        self._ready = True

    def begin_transaction(self) -> None:
        if not self._ready or self._open is not None:
            raise _failure(kafka.LibrdkafkaError._STATE, "cannot begin a transaction now")
        self._open = []
        self._offsets = []

    def send_offsets_to_transaction(self, positions: Sequence[kafka.TopicPartition],
                                    group_metadata: str, timeout: float | None = None) -> None:
        if self._open is None:
            raise _failure(kafka.LibrdkafkaError._STATE, "no transaction is open")
        self._offsets.append((group_metadata, list(positions)))

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Make the transaction's records visible and its offsets committed, atomically."""
        if self._open is None:
            raise _failure(kafka.LibrdkafkaError._STATE, "no transaction is open")
        with self._log.changed:
            for topic, data, key, listed, partition, on_delivery in self._open:
                self._reports.append((on_delivery,
                                      self._log.append(topic, data, key, listed, partition)))
            for group, positions in self._offsets:
                self._log.commit(group, positions)
        self._open = None
        self._offsets = []

    def abort_transaction(self, timeout: float | None = None) -> None:
        self._open = None
        self._offsets = []


class MemoryAdmin:
    """``list_topics`` and ``create_topics`` over the log."""

    def __init__(self, log: MemoryLog) -> None:
        self._log = log

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMeta:
        return metadata(self._log, topic)

    def create_topics(self, new_topics: Sequence[Any], **_options: Any) -> dict[str, Future[None]]:
        """Create each ``NewTopic`` (its ``topic`` and ``num_partitions``)."""
        futures: dict[str, Future[None]] = {}
        for new in new_topics:
            future: Future[None] = Future()
            if self._log.create(new.topic, max(1, new.num_partitions)):
                future.set_result(None)
            else:
                future.set_exception(_failure(kafka.LibrdkafkaError.TOPIC_ALREADY_EXISTS,
                                              f"Topic '{new.topic}' already exists."))
            futures[new.topic] = future
        return futures


class MemoryTransport:
    """A :class:`streamtask.kafka.clients.Transport` whose clients all share one
    :class:`MemoryLog`."""

    def __init__(self, log: MemoryLog | None = None) -> None:
        self.log = log or MemoryLog()

    def consumer(self, settings: KafkaSettings, group: str, **overrides: Any) -> MemoryConsumer:
        return MemoryConsumer(self.log, group, overrides)

    def producer(self, settings: KafkaSettings, **overrides: Any) -> MemoryProducer:
        return MemoryProducer(self.log, settings, overrides)

    def admin(self, settings: KafkaSettings, **overrides: Any) -> MemoryAdmin:
        return MemoryAdmin(self.log)

    def read_partition(self, settings: KafkaSettings, topic: str, partition: int,
                       timeout: float = 30.0) -> list[tuple[str, bytes | None]]:
        """Every (key, value) of the partition: a join restores its changelog from this."""
        return [((record.key() or b"").decode(), record.value())
                for record in self.log.read(topic, partition, 0, self.log.end(topic, partition))]

    def wait_for_cluster(self, settings: KafkaSettings, timeout: float | None = None) -> None:
        """The log is always there."""
