"""Delivery: how a task's outcome becomes durable, and how durable offsets are committed.

One interface (:class:`Delivery`), two implementations chosen once, when the worker starts:

* :class:`AtLeastOnce` produces a task's records at once; the task is durable when every one
  of them is acknowledged (the callback counts down the job's pending acks). Offsets are
  committed through the consumers (:class:`Committer`): asynchronously on an interval,
  synchronously on revoke and shutdown. A worker has one consumer for its inputs and one for
  its retry levels (each its own group), so offsets go through the consumer that owns their
  topic. A failed commit marks its partitions uncommitted and is tried again soon
  (``RETRY_AFTER``), not a whole interval later: commits that race a rebalance fail
  (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS), and a crash before the next good commit would
  run all the tasks since the last one again.
* :class:`Transactional` (exactly-once stages) holds a task's records until its offset falls
  below the committable position; a commit produces them and adds the positions to the open
  transaction, which commits (:mod:`streamtask.worker.transactions`).

Either way a job's offset moves only once ``durable(job)`` was called for it, and a delivery
error is latched and raised at the next :meth:`Delivery.serve` (the loop's sync point).
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from streamtask.config import KafkaSettings
from streamtask.errors import DeliveryFailed, ProduceRejected
from streamtask.events import Event, EventBus
from streamtask.kafka import clients as kafka
from streamtask.worker.job import Job, Outgoing, TopicPartition
from streamtask.worker.offsets import PartitionOffsets
from streamtask.worker.transactions import Transactions

RETRY_AFTER = 0.2
"""Seconds after a failed commit before it is tried again."""
REBALANCING = frozenset({"ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS", "UNKNOWN_MEMBER_ID",
                         "_WAIT_COORD", "NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE"})
"""Commit errors that only mean the group is changing or its coordinator is moving."""

Partitions = dict[TopicPartition, PartitionOffsets]


class Delivery(Protocol):
    """Makes outcomes durable and commits what is; the loop is its only caller."""

    def attach(self, owner: Mapping[str, Any]) -> None:
        """The consumers, by the topics they own, once they are open."""

    def on_commit(self, error: Any, partitions: list[Any]) -> None:
        """librdkafka's report of an asynchronous offset commit (a consumer callback)."""

    def send(self, job: Job, records: Sequence[Outgoing]) -> None:
        """Make ``records`` durable on behalf of ``job``; the job is durable once all are
        (at once, with none). Raises :class:`ProduceRejected` when the producer refuses one."""

    def send_then(self, first: Outgoing, second: Outgoing) -> None:
        """Send ``first``, and ``second`` only once ``first`` is durable (on behalf of no job)."""

    def commit(self, asynchronous: bool = True,
               only: set[TopicPartition] | None = None) -> None:
        """Commit what is durable (of every partition, or ``only`` these)."""

    def retry_due(self, now: float) -> bool:
        """Whether a failed commit should be tried again now, ahead of the interval."""

    def forget(self, tps: set[TopicPartition]) -> None:
        """Partitions that left: what is held for them must never go out."""

    def serve(self, timeout: float) -> None:
        """Serve acknowledgements (waiting up to ``timeout``); raises the latched
        :class:`DeliveryFailed` once a record was not acknowledged (it stays latched)."""

    def close(self, timeout: float) -> None:
        """Wait (bounded) for what is still in flight."""


class _Producing:
    """The producing half both deliveries share: one acknowledgement callback per record."""

    def __init__(self, producer: Any, settings: KafkaSettings, events: EventBus,
                 durable: Callable[[Job], None]) -> None:
        self._producer = producer
        self._settings = settings
        self._events = events
        self._durable = durable
        self._failure: DeliveryFailed | None = None

    def _produce(self, out: Outgoing, job: Job | None,
                 after: Callable[[], None] | None = None) -> None:
        """Produce a record on behalf of ``job``; the job is durable when all are
        acknowledged. ``after`` runs once the record is acknowledged.

        Raises :class:`ProduceRejected` when librdkafka refuses the record outright.
        """
        # The per-task case takes a partial of one bound method (the job and topic as its
        # state), cheaper than building a closure per record.
        acknowledged = (functools.partial(self._acknowledged, job, out.topic) if after is None
                        else functools.partial(self._acknowledged_then, job, out.topic, after))
        # Counted before produce: waiting for room in a full queue serves the acknowledgements
        # of the job's earlier records, which must not finish the job while this one is unsent.
        if job is not None:
            job.pending_acks += 1
        try:
            kafka.produce(self._producer, out.topic, out.value, out.key, headers=out.headers,
                          partition=out.partition, on_delivery=acknowledged)
        except ProduceRejected:
            if job is not None:
                job.pending_acks -= 1
            raise

    def _acknowledged(self, job: Job | None, topic: str, error: Any, _message: Any) -> None:
        """The delivery report of one of ``job``'s records (to ``topic``): the job is
        durable when its last record is acknowledged; an error is latched for serve."""
        if error is not None:
            self._failure = kafka.delivery_error(error, topic, self._settings)
            self._events.emit(Event.DELIVERY_FAILED, topic=topic, error=error.str())
            return
        if job is not None:
            job.pending_acks -= 1
            if job.pending_acks == 0:
                self._durable(job)

    def _acknowledged_then(self, job: Job | None, topic: str, after: Callable[[], None],
                           error: Any, message: Any) -> None:
        """As :meth:`_acknowledged`, running ``after`` first once the record is acknowledged."""
        if error is None:
            after()
        self._acknowledged(job, topic, error, message)

    def serve(self, timeout: float) -> None:
        self._producer.poll(timeout)
        if self._failure is not None:
            raise self._failure

    def close(self, timeout: float) -> None:
        self._producer.flush(timeout)


class AtLeastOnce(_Producing):
    """Records go out at once; offsets are committed through the consumers."""

    def __init__(self, producer: Any, settings: KafkaSettings, events: EventBus,
                 durable: Callable[[Job], None], partitions: Partitions) -> None:
        super().__init__(producer, settings, events, durable)
        self._commits = Committer(partitions, events)

    def attach(self, owner: Mapping[str, Any]) -> None:
        self._commits.attach(owner)

    def on_commit(self, error: Any, partitions: list[Any]) -> None:
        self._commits.on_commit(error, partitions)

    def send(self, job: Job, records: Sequence[Outgoing]) -> None:
        for out in records:
            self._produce(out, job)
        if not records:
            self._durable(job)

    def send_then(self, first: Outgoing, second: Outgoing) -> None:
        self._produce(first, None, after=functools.partial(self._produce, second, None))

    def commit(self, asynchronous: bool = True,
               only: set[TopicPartition] | None = None) -> None:
        self._commits.commit(asynchronous, only)

    def retry_due(self, now: float) -> bool:
        return self._commits.retry_due(now)

    def forget(self, tps: set[TopicPartition]) -> None:
        """Nothing is held: what was sent for them is sent (at least once)."""

    def replace(self, producer: Any) -> Any:
        """Produce through ``producer`` from now on; returns the old one, whose reports are
        never served again (its tasks were abandoned and run again)."""
        old, self._producer = self._producer, producer
        return old


class Transactional(_Producing):
    """Records are held and go out with their offsets, in one transaction per commit."""

    def __init__(self, producer: Any, settings: KafkaSettings, events: EventBus,
                 durable: Callable[[Job], None], partitions: Partitions) -> None:
        super().__init__(producer, settings, events, durable)
        self._partitions = partitions
        self._txn = Transactions(producer)
        self._owner: dict[str, Any] = {}
        self._consumers: list[Any] = []

    def attach(self, owner: Mapping[str, Any]) -> None:
        self._owner = dict(owner)
        self._consumers = list(dict.fromkeys(owner.values()))

    def on_commit(self, error: Any, partitions: list[Any]) -> None:
        """Never called: offsets go into the transaction, not through a consumer."""

    def send(self, job: Job, records: Sequence[Outgoing]) -> None:
        self._txn.hold(job.tp, job.offset, records)
        self._durable(job)

    def send_then(self, first: Outgoing, second: Outgoing) -> None:
        """One transaction makes both durable, or neither."""
        self._produce_now(first)
        self._produce_now(second)

    def _produce_now(self, out: Outgoing) -> None:
        self._produce(out, None)
        self._txn.produced()

    def commit(self, asynchronous: bool = True,
               only: set[TopicPartition] | None = None) -> None:
        """Held outputs below each position, and the positions, in one transaction (of
        every partition: a transaction cannot leave part of what it holds out)."""
        positions = {tp: t.position for tp, t in self._partitions.items()
                     if t.position is not None}
        moved = {tp: t.to_commit() for tp, t in self._partitions.items()}
        offsets = [(consumer, [kafka.TopicPartition(tp[0], tp[1], position)
                               for tp, position in moved.items()
                               if position is not None and self._owner[tp[0]] is consumer])
                   for consumer in self._consumers]
        if self._txn.commit(positions, offsets, self._produce_now):
            for tp, position in moved.items():
                if position is not None:
                    self._partitions[tp].committed = position
            self._events.emit(Event.OFFSETS_COMMITTED, count=sum(len(o) for _, o in offsets),
                              transaction=True)

    def retry_due(self, now: float) -> bool:
        """A failed transaction stops the worker: there is nothing to retry."""
        return False

    def forget(self, tps: set[TopicPartition]) -> None:
        """Their tasks run again elsewhere: their held outputs must never go out."""
        self._txn.drop(tps)


def open_delivery(producer: Any, settings: KafkaSettings, events: EventBus,
                  durable: Callable[[Job], None], partitions: Partitions, *,
                  exactly_once: bool) -> Delivery:
    """The delivery of a worker's stages (all exactly-once, or none)."""
    kind = Transactional if exactly_once else AtLeastOnce
    return kind(producer, settings, events, durable, partitions)


class Committer:
    """Commits each partition's committable position through the consumer that owns it."""

    def __init__(self, partitions: dict[TopicPartition, PartitionOffsets],
                 events: EventBus) -> None:
        self._partitions = partitions
        self._events = events
        self._owner: dict[str, Any] = {}
        self._consumers: list[Any] = []
        self._retry_at: float | None = None
        self._requested: dict[str, deque[float]] = {}
        """Per owning consumer (by its first topic), when each pending asynchronous commit
        was sent: librdkafka reports a consumer's commits in order."""

    def attach(self, owner: Mapping[str, Any]) -> None:
        """The consumers, by the topics they own (they exist only after this object)."""
        self._owner = dict(owner)
        self._consumers = list(dict.fromkeys(owner.values()))

    def retry_due(self, now: float) -> bool:
        """Whether a failed commit should be tried again now (ahead of the interval)."""
        return self._retry_at is not None and now >= self._retry_at

    def commit(self, asynchronous: bool = True, only: set[TopicPartition] | None = None) -> None:
        """Commit every partition whose position moved (or only those in ``only``).

        A synchronous commit (revoke, shutdown) sends every known position, moved or not:
        the last asynchronous commit of a position may still be in flight or have failed
        without its report served yet (a rebalance fails it with ILLEGAL_GENERATION), and
        this is the last chance to make that position durable.
        """
        self._retry_at = None
        offsets = []
        for tp, tracker in self._partitions.items():
            position = tracker.to_commit() if asynchronous else tracker.position
            if position is not None and (only is None or tp in only):
                offsets.append(kafka.TopicPartition(tp[0], tp[1], position))
                tracker.committed = position
        if not offsets:
            return
        for consumer in self._consumers:
            mine = [o for o in offsets if self._owner[o.topic] is consumer]
            if mine:
                self._commit_to(consumer, mine, asynchronous)
        self._events.emit(Event.OFFSETS_COMMITTED, count=len(offsets),
                          offsets={f"{o.topic}[{o.partition}]": o.offset for o in offsets})

    def _commit_to(self, consumer: Any, offsets: list[Any], asynchronous: bool) -> None:
        sent = time.monotonic()
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
                self._requested.setdefault(self._key(offsets), deque()).append(sent)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
                self._events.emit(Event.OFFSETS_COMMIT_ACKNOWLEDGED,
                                  seconds=time.monotonic() - sent)
        except kafka.KafkaException as exc:
            self._failed(exc.args[0] if exc.args else exc, offsets)

    def _key(self, offsets: list[Any]) -> str:
        """Which consumer a commit went through, named by the first topic it owns."""
        consumer = self._owner.get(offsets[0].topic) if offsets else None
        return next((t for t, c in self._owner.items() if c is consumer), "")

    def on_commit(self, error: Any, partitions: list[Any]) -> None:
        """librdkafka's report of an asynchronous commit."""
        pending = self._requested.get(self._key(partitions))
        sent = pending.popleft() if pending else None
        if error is not None:
            self._failed(error, partitions)
        elif sent is not None:
            self._events.emit(Event.OFFSETS_COMMIT_ACKNOWLEDGED,
                              seconds=time.monotonic() - sent)

    def _failed(self, error: Any, partitions: list[Any]) -> None:
        """Mark the positions uncommitted and try again soon. ``rebalancing`` says the
        commit only raced a group change (expected; the revoke commits synchronously)."""
        name = error.name() if isinstance(error, kafka.LibrdkafkaError) else ""
        self._events.emit(Event.OFFSETS_COMMIT_FAILED, error=str(error),
                          rebalancing=name in REBALANCING, retry_in=RETRY_AFTER)
        self._uncommitted(partitions)
        self._retry_at = time.monotonic() + RETRY_AFTER

    def _uncommitted(self, partitions: list[Any]) -> None:
        for tp in partitions:
            tracker = self._partitions.get((tp.topic, tp.partition))
            if tracker is not None:
                tracker.committed = None
