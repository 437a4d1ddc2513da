"""The in-memory log behind :mod:`streamtask.testing`: topics, partitions, offsets, groups.

It keeps only what the worker relies on from Kafka: each partition is an append-only list
whose offsets start at 0, a key always lands on the same partition (so a key's tasks stay in
order), each consumer group's committed offsets, and records of a transaction that become
visible all at once when it commits (``read_committed``). One lock guards everything, so a
test can take a consistent snapshot of every partition end and committed offset at once
(that is how a run knows it has settled). One condition wakes consumers waiting in ``poll``
when records arrive or the fake clock moves.
"""

from __future__ import annotations

import itertools
import threading
import zlib
from collections.abc import Iterable, Sequence

from streamtask import clock
from streamtask.kafka import clients as kafka

TP = tuple[str, int]
Headers = list[tuple[str, bytes | None]]


class Record:
    """One record of the log, shaped like a confluent-kafka ``Message`` (what the worker and
    the delivery reports read)."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, headers: Headers | None, timestamp: int) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = headers
        self._timestamp = timestamp

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        """None when the record has no headers, as confluent-kafka returns it."""
        return self._headers

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        """(create-time type, epoch ms from :func:`streamtask.clock.now_ms`)."""
        return 1, self._timestamp

    def __len__(self) -> int:
        return len(self._value or b"")

    def __repr__(self) -> str:
        return f"Record({self._topic}[{self._partition}]@{self._offset}, key={self._key!r})"


def as_bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def as_headers(headers: Iterable[tuple[str, str | bytes | None]] | None) -> Headers | None:
    listed = [(name, as_bytes(value)) for name, value in headers or ()]
    return listed or None


class UnknownTopic(LookupError):
    """A produce or read named a topic the log does not have."""


class MemoryLog:
    """Every topic and committed offset of one test run."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        """Held for every read and write; notified when records arrive or time moves."""
        self._topics: dict[str, list[list[Record]]] = {}
        self._committed: dict[str, dict[TP, int]] = {}
        self._spread = itertools.count()
        self.nudges = 0
        """Bumped by :meth:`wake`: a waiting ``poll`` returns early when it changes."""

    # -- topics ------------------------------------------------------------------------------

    def create(self, topic: str, partitions: int) -> bool:
        """Create ``topic`` unless it exists; True when it was created."""
        with self.changed:
            if topic in self._topics:
                return False
            self._topics[topic] = [[] for _ in range(partitions)]
            return True

    def topics(self) -> dict[str, int]:
        """Every topic with its partition count."""
        with self.changed:
            return {topic: len(parts) for topic, parts in self._topics.items()}

    def partitions(self, topic: str) -> int:
        with self.changed:
            return len(self._partitions(topic))

    def _partitions(self, topic: str) -> list[list[Record]]:
        try:
            return self._topics[topic]
        except KeyError:
            raise UnknownTopic(topic) from None

    # -- records -----------------------------------------------------------------------------

    def append(self, topic: str, value: bytes | None, key: bytes | None,
               headers: Headers | None, partition: int = -1) -> Record:
        """Append one record; the caller holds :attr:`changed` for atomic batches."""
        with self.changed:
            parts = self._partitions(topic)
            if partition < 0:
                partition = self.partition_for(key, len(parts))
            elif partition >= len(parts):
                raise UnknownTopic(f"{topic}[{partition}]")
            records = parts[partition]
            record = Record(topic, partition, len(records), key, value, headers, clock.now_ms())
            records.append(record)
            self.changed.notify_all()
            return record

    def partition_for(self, key: bytes | None, partitions: int) -> int:
        """The same key always picks the same partition; keyless records are spread."""
        if key is None:
            return next(self._spread) % partitions
        return zlib.crc32(key) % partitions

    def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        """Up to ``limit`` records of one partition from ``offset`` on."""
        with self.changed:
            return self._partitions(topic)[partition][offset:offset + limit]

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, partition by partition, in offset order."""
        with self.changed:
            return [record for part in self._partitions(topic) for record in part]

    def end(self, topic: str, partition: int) -> int:
        """The offset the next record of the partition will get (its high watermark)."""
        with self.changed:
            return len(self._partitions(topic)[partition])

    # -- consumer groups ---------------------------------------------------------------------

    def commit(self, group: str, offsets: Sequence[kafka.TopicPartition]) -> None:
        with self.changed:
            mine = self._committed.setdefault(group, {})
            for tp in offsets:
                if tp.offset >= 0:
                    mine[(tp.topic, tp.partition)] = tp.offset

    def committed(self, group: str, tp: TP) -> int | None:
        with self.changed:
            return self._committed.get(group, {}).get(tp)

    def wake(self) -> None:
        """Make every consumer waiting in ``poll`` return now (the fake clock moved, or a
        test waits for the worker loops to go round)."""
        with self.changed:
            self.nudges += 1
            self.changed.notify_all()
