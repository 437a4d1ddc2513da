"""Seeing, from outside, that a worker loop went round and that its clients are idle.

A test run wraps its transport so that every consumer counts its ``consume`` calls (the
worker makes one per turn of its loop, before it releases due retries and expires joins: two
after the clock moved mean one whole turn ran at the new time) and says when it got its
partitions, and so that every producer's open transaction can be checked for records not yet
visible. Nothing here changes what the clients do, except, on a real broker, the timestamps of
the records consumers return: on the fake clock (:mod:`streamtask.testing.timeline`).
"""

from __future__ import annotations

from typing import Any

from streamtask.config import KafkaSettings
from streamtask.kafka.clients import Transport
from streamtask.testing.clients import MemoryProducer
from streamtask.testing.timeline import Timeline, retimed


class WatchedConsumer:
    """A consumer that counts the worker loop's turns and notes its first assignment."""

    def __init__(self, inner: Any, group: str, timeline: Timeline | None = None) -> None:
        self._inner = inner
        self.group = group
        self.turns = 0
        self.assigned = False
        self._timeline = timeline

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        # Only consume() counts: the worker calls it once per turn of its loop, and poll()
        # at most once more in the same turn, which must not count as a second turn.
        self.turns += 1
        messages = self._inner.consume(*args, **kwargs)
        timeline = self._timeline
        return messages if timeline is None else [retimed(m, timeline) for m in messages]

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        message = self._inner.poll(*args, **kwargs)
        return message if self._timeline is None else retimed(message, self._timeline)

    def subscribe(self, topics: list[str], on_assign: Any = None, **callbacks: Any) -> None:
        def assigned(consumer: Any, partitions: list[Any]) -> None:
            self.assigned = True
            if on_assign is not None:
                on_assign(consumer, partitions)

        given = {name: callback for name, callback in callbacks.items() if callback is not None}
        self._inner.subscribe(topics, on_assign=assigned, **given)


class WatchedTransport:
    """A transport whose consumers are :class:`WatchedConsumer`\\ s and whose producers are
    remembered."""

    def __init__(self, inner: Transport, timeline: Timeline | None = None) -> None:
        """``timeline``: the fake clock's, to put consumed records' timestamps on (for a
        real broker, whose timestamps are the wall clock's)."""
        self.inner = inner
        self._timeline = timeline
        self.consumers: list[WatchedConsumer] = []
        self.producers: list[Any] = []

    def consumer(self, settings: KafkaSettings, group: str, **overrides: Any) -> WatchedConsumer:
        watched = WatchedConsumer(self.inner.consumer(settings, group, **overrides), group,
                                  self._timeline)
        self.consumers.append(watched)
        return watched

    def producer(self, settings: KafkaSettings, **overrides: Any) -> Any:
        producer = self.inner.producer(settings, **overrides)
        self.producers.append(producer)
        return producer

    def admin(self, settings: KafkaSettings, **overrides: Any) -> Any:
        return self.inner.admin(settings, **overrides)

    def read_partition(self, settings: KafkaSettings, topic: str, partition: int,
                       timeout: float = 30.0) -> list[tuple[str, bytes | None]]:
        return self.inner.read_partition(settings, topic, partition, timeout)

    def wait_for_cluster(self, settings: KafkaSettings, timeout: float | None = None) -> None:
        self.inner.wait_for_cluster(settings, timeout)

    def unpublished(self) -> int:
        """Records in open transactions: produced, not yet visible to anyone."""
        return sum(p.unpublished for p in self.producers if isinstance(p, MemoryProducer))
