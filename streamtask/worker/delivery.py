"""Committing what is durable: each partition's committable position, never more.

Commits go out on an interval (asynchronously) and synchronously on revoke and shutdown.
A worker has one consumer for its inputs and one for its retry levels (each its own group),
so offsets are committed through the consumer that owns their topic. A failed commit marks
its partitions uncommitted and is tried again soon (``RETRY_AFTER``), not a whole interval
later: commits that race a rebalance fail (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS), and
a crash before the next good commit would run all the tasks since the last one again. In
exactly-once mode the positions go into the open transaction instead
(:mod:`streamtask.transactions`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamtask import kafka
from streamtask.events import Event, EventBus
from streamtask.worker.job import TopicPartition
from streamtask.worker.offsets import PartitionOffsets
from streamtask.worker.transactions import Transactions

RETRY_AFTER = 0.2
"""Seconds after a failed commit before it is tried again."""
REBALANCING = frozenset({"ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS", "UNKNOWN_MEMBER_ID",
                         "_WAIT_COORD", "NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE"})
"""Commit errors that only mean the group is changing or its coordinator is moving."""


class Committer:
    def __init__(self, partitions: dict[TopicPartition, PartitionOffsets],
                 events: EventBus) -> None:
        self._partitions = partitions
        self._events = events
        self._owner: dict[str, Any] = {}
        self._consumers: list[Any] = []
        self._txn: Transactions | None = None
        self._produce: Callable[[Any], None] = lambda _record: None
        self._retry_at: float | None = None
        self._requested: dict[str, deque[float]] = {}
        """Per owning consumer (by its first topic), when each pending asynchronous commit
        was sent: librdkafka reports a consumer's commits in order."""

    def attach(self, owner: dict[str, Any], txn: Transactions | None,
               produce: Callable[[Any], None]) -> None:
        """The consumers (by the topics they own) and, for exactly-once, the transaction."""
        self._owner = owner
        self._consumers = list(dict.fromkeys(owner.values()))
        self._txn = txn
        self._produce = produce

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
        if self._txn is not None:
            self._commit_transaction()
            return
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

    def _commit_transaction(self) -> None:
        """Held outputs below each position, and the positions, in one transaction."""
        assert self._txn is not None
        positions = {tp: t.position for tp, t in self._partitions.items()
                     if t.position is not None}
        moved = {tp: t.to_commit() for tp, t in self._partitions.items()}
        offsets = [(consumer, [kafka.TopicPartition(tp[0], tp[1], position)
                               for tp, position in moved.items()
                               if position is not None and self._owner[tp[0]] is consumer])
                   for consumer in self._consumers]
        if self._txn.commit(positions, offsets, self._produce):
            for tp, position in moved.items():
                if position is not None:
                    self._partitions[tp].committed = position
            self._events.emit(Event.OFFSETS_COMMITTED, count=sum(len(o) for _, o in offsets),
                              transaction=True)

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
