"""The console's copy of every stage's dead letters: one reader thread for all viewers.

A page load must not read thousands of records from Kafka, so the console keeps them: one
thread tails every stage's dead-letter topic (partitions assigned by hand, nothing ever
committed, like ``dlq ls``) and holds up to ``keep`` of the most recent dead letters per
stage in memory. Pages filter and count what it holds; every viewer shares the one reader.
It re-reads the topic list every ``refresh`` seconds, so a DLQ created later is picked up.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError

from streamtask.errors import StreamtaskError
from streamtask.kafka import clients as kafka
from streamtask.kafka.headers import DeadLetterRecord
from streamtask.model.app import App
from streamtask.ops import deadletters as dlq
from streamtask.ui.background import Background

log = logging.getLogger("streamtask.ui")
KEEP = 50_000
"""Dead letters held per stage; older ones are still in Kafka, just not browsable here."""


@dataclass(frozen=True)
class Page:
    """One page of a stage's dead letters, newest first, and how many matched in all."""

    letters: list[DeadLetterRecord]
    matched: int
    number: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.matched // self.size))


def _order(record: DeadLetterRecord) -> tuple[int, int, int]:
    return (record.dead_at, record.dlq_partition, record.dlq_offset)


class _Held:
    """One stage's held dead letters, oldest first by dead-at time, at most ``keep``; with
    the counts by error type and the lookup by position kept as records come and go, so a
    page load never sorts or counts them all."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.records: list[DeadLetterRecord] = []
        self.keys: list[tuple[int, int, int]] = []
        self.types: Counter[str] = Counter()
        self.at: dict[tuple[int, int], DeadLetterRecord] = {}

    def add(self, record: DeadLetterRecord) -> None:
        key = _order(record)
        if self.keys and key < self.keys[-1]:  # rare: partitions interleave in time
            place = bisect.bisect(self.keys, key)
            self.keys.insert(place, key)
            self.records.insert(place, record)
        else:
            self.keys.append(key)
            self.records.append(record)
        self.types[record.error_type] += 1
        self.at[(record.dlq_partition, record.dlq_offset)] = record

    def trim(self) -> None:
        """Drop the oldest beyond ``keep`` (once per batch: one slice, not one per record)."""
        excess = len(self.records) - self.keep
        if excess <= 0:
            return
        for old in self.records[:excess]:
            self.types[old.error_type] -= 1
            if not self.types[old.error_type]:
                del self.types[old.error_type]
            self.at.pop((old.dlq_partition, old.dlq_offset), None)
        del self.records[:excess]
        del self.keys[:excess]


class LetterIndex(Background):
    """Every stage's recent dead letters, read by one background thread (see the module)."""

    def __init__(self, app: App, *, keep: int = KEEP, refresh: float = 5.0) -> None:
        super().__init__("streamtask-ui-letters")
        self.app = app
        self.keep = keep
        self.refresh = refresh
        self._stage_of = {stage.dlq_topic: stage.name for stage in app.stages.values()}
        self._held = {name: _Held(keep) for name in app.stages}
        self._totals: dict[str, int | None] = dict.fromkeys(app.stages)
        self._assigned: dict[tuple[str, int], int] = {}  # partition -> end seen when assigned
        self._lock = threading.Lock()
        self._looked = False  # the topic list was read at least once
        self.version = 0
        """Goes up whenever what the index holds changes: the live page's cue to push."""
        self.problem: str | None = None
        """The last error reading Kafka (None once a read succeeds again)."""

    # -- the reader thread ---------------------------------------------------------------

    def _run(self) -> None:
        """Read until stopped; an error is shown on the pages and retried, never fatal."""
        consumer = kafka.consumer(self.app.kafka, f"{self.app.name}.ui",
                                  **{"enable.partition.eof": True})
        next_refresh = 0.0
        try:
            while not self._stop.is_set():
                try:
                    if time.monotonic() >= next_refresh:
                        self._update_assignment(consumer)
                        next_refresh = time.monotonic() + self.refresh
                    self._read(consumer)
                    self.problem = None
                except (StreamtaskError, kafka.KafkaException) as exc:
                    self.problem = f"reading dead letters: {exc}"
                    log.warning("%s", self.problem)
                    self._stop.wait(2.0)
        finally:
            consumer.close()

    def _update_assignment(self, consumer: Any) -> None:
        """Assign partitions of DLQs not read yet (from ``keep`` before their end); recount."""
        timeout = self.app.kafka.connect_timeout
        known = dlq.partition_counts(consumer, timeout)
        fresh = []
        totals: dict[str, int | None] = dict.fromkeys(self.app.stages)
        for topic, stage in self._stage_of.items():
            if topic not in known:
                continue
            marks = dlq.watermarks(consumer, topic, known[topic], timeout)
            totals[stage] = sum(high - low for low, high in marks.values())
            for partition, (low, high) in marks.items():
                if (topic, partition) not in self._assigned:
                    start = max(low, high - self.keep)
                    self._assigned[(topic, partition)] = high if start < high else -1
                    fresh.append(kafka.TopicPartition(topic, partition, start))
        if fresh:
            consumer.incremental_assign(fresh)
        self._looked = True
        with self._lock:
            if totals != self._totals:
                self._totals = totals
                self.version += 1

    def _read(self, consumer: Any) -> None:
        messages = consumer.consume(500, 0.25)
        records = []
        for message in messages:
            error = message.error()
            tp = (message.topic(), message.partition())
            if error is None:
                records.append(dlq.record_of(message))
                if message.offset() + 1 >= self._assigned.get(tp, 0):
                    self._assigned[tp] = -1  # reached the end it had when first seen
            elif error.code() == RdKafkaError._PARTITION_EOF:
                self._assigned[tp] = -1
            elif error.fatal():
                kafka.raise_for(error, "reading dead letters failed")
            else:
                log.warning("consumer error while reading dead letters: %s", error.str())
        if records:
            with self._lock:
                for record in records:
                    self._held[self._stage_of[record.dlq_topic]].add(record)
                for held in self._held.values():
                    held.trim()
                self.version += 1

    # -- what pages ask ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once every partition seen so far was read to the end it had then."""
        return self._looked and all(end < 0 for end in self._assigned.values())

    def counts(self) -> dict[str, tuple[int | None, int]]:
        """Per stage: dead letters in its DLQ now (None: no topic) and how many are held."""
        with self._lock:
            return {name: (self._totals[name], len(held.records))
                    for name, held in self._held.items()}

    def error_types(self, stage: str) -> Counter[str]:
        with self._lock:
            return Counter(self._held[stage].types)

    def find(self, stage: str, where: Callable[[DeadLetterRecord], bool] | None = None,
             number: int = 1, size: int = 50) -> Page:
        """Page ``number`` (from 1) of the stage's held dead letters that ``where`` accepts
        (all when None), newest first."""
        start = (max(1, number) - 1) * size
        with self._lock:
            held = self._held[stage].records
            if where is None:
                newest = len(held) - start
                return Page(held[max(0, newest - size):max(0, newest)][::-1], len(held),
                            max(1, number), size)
            matched = [record for record in reversed(held) if where(record)]
        return Page(matched[start:start + size], len(matched), max(1, number), size)

    def get(self, stage: str, partition: int, offset: int) -> DeadLetterRecord | None:
        with self._lock:
            return self._held[stage].at.get((partition, offset))
