"""Reading a test run's topics and group offsets: from the memory log, or from a broker.

A run is settled when every group has committed every partition it reads up to its end
(apart from retry records held until they are due). :meth:`progress` answers that question
with one consistent picture: under the memory log's lock, or, on a broker, by reading the
ends, then the committed offsets, then the ends again, and trusting the picture only when
both ends agree (a record appended while the offsets were read shows in the second read).
On a broker, offsets past the committed one that hold only transaction markers (or aborted
records) are not work left: a group that read everything of a transactional topic commits
the offset of the last record + 1, which is short of the end by the marker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from streamtask.config import KafkaSettings
from streamtask.kafka import clients as kafka
from streamtask.ops import deadletters as dlq
from streamtask.testing.log import TP, MemoryLog

Progress = dict[TP, tuple[int, int]]
"""Per partition a group reads: (committed offset, end offset)."""


class LogView(Protocol):
    def progress(self, groups: Mapping[str, Sequence[str]]) -> dict[str, Progress] | None:
        """For each group (with the topics it reads): its committed and end offsets;
        None when no consistent picture could be taken."""

    def records(self, topic: str) -> list[Any]:
        """Every record now in ``topic``, partition by partition, in offset order."""

    def close(self) -> None: ...


class MemoryView:
    def __init__(self, log: MemoryLog) -> None:
        self._log = log

    def progress(self, groups: Mapping[str, Sequence[str]]) -> dict[str, Progress] | None:
        log = self._log
        with log.changed:
            return {group: {(topic, p): (log.committed(group, (topic, p)) or 0,
                                         log.end(topic, p))
                            for topic in topics for p in range(log.partitions(topic))}
                    for group, topics in groups.items()}

    def records(self, topic: str) -> list[Any]:
        return list(self._log.records(topic))

    def close(self) -> None:
        """Nothing to release."""


class KafkaView:
    """The same answers from a real cluster, through consumers that never join a group."""

    def __init__(self, settings: KafkaSettings, name: str) -> None:
        self._settings = settings
        self._name = name
        self._offsets: dict[str, Any] = {}
        self._reader = kafka.consumer(settings, f"{name}.testing-reader",
                                      **{"enable.partition.eof": True})
        self._scanner = kafka.consumer(settings, f"{name}.testing-reader",
                                       **{"enable.partition.eof": True,
                                          "fetch.wait.max.ms": 10})
        self._known: dict[tuple[TP, int, int], int] = {}

    def _partitions(self, topics: Sequence[str]) -> list[kafka.TopicPartition]:
        counts = dlq.partition_counts(self._reader, self._settings.connect_timeout)
        return [kafka.TopicPartition(topic, p) for topic in topics
                for p in range(counts.get(topic, 0))]

    def _ends(self, tps: list[kafka.TopicPartition]) -> dict[TP, tuple[int, int]]:
        timeout = self._settings.connect_timeout
        return {(tp.topic, tp.partition): self._reader.get_watermark_offsets(
                    tp, timeout=timeout, cached=False) for tp in tps}

    def progress(self, groups: Mapping[str, Sequence[str]]) -> dict[str, Progress] | None:
        try:
            return self._progress(groups)
        except kafka.KafkaException:  # a partition created a moment ago has no leader yet
            return None

    def _progress(self, groups: Mapping[str, Sequence[str]]) -> dict[str, Progress] | None:
        wanted = {group: self._partitions(topics) for group, topics in groups.items()}
        every = [tp for tps in wanted.values() for tp in tps]
        before = self._ends(every)
        committed: dict[str, dict[TP, int]] = {}
        for group, tps in wanted.items():
            consumer = self._offsets.get(group)
            if consumer is None:
                consumer = self._offsets[group] = kafka.consumer(self._settings, group)
            found = consumer.committed(tps, timeout=self._settings.connect_timeout)
            committed[group] = {(tp.topic, tp.partition): tp.offset for tp in found}
        after = self._ends(every)
        if before != after:
            return None
        spans = {tp: (max(offset, after[tp][0]), after[tp][1])
                 for positions in committed.values() for tp, offset in positions.items()}
        visible = self._next_visible({tp: span for tp, span in spans.items()
                                      if span[0] < span[1]})
        return {group: {tp: (visible.get((tp, spans[tp][0]), spans[tp][0]), spans[tp][1])
                        for tp in positions} for group, positions in committed.items()}

    def _next_visible(self, spans: dict[TP, tuple[int, int]]) -> dict[tuple[TP, int], int]:
        """For each partition's (start, end): the offset of the first record a
        ``read_committed`` consumer gets at or after start (end when there is none).
        Offsets taken by transaction markers or aborted records are no work left; records
        of an open transaction are (the answer is then start). Settled answers are kept:
        the records below an end never change."""
        found = {(tp, start): self._known[(tp, start, end)] for tp, (start, end) in spans.items()
                 if (tp, start, end) in self._known}
        todo = {tp: span for tp, span in spans.items() if (tp, span[0]) not in found}
        if not todo:
            return found
        scanner = self._scanner
        scanner.assign([kafka.TopicPartition(t, p, start) for (t, p), (start, _) in todo.items()])
        try:
            deadline = time.monotonic() + self._settings.connect_timeout
            while todo and time.monotonic() < deadline:
                message = scanner.poll(0.05)
                if message is None:
                    continue
                tp = (message.topic() or "", message.partition() or 0)
                span = todo.pop(tp, None)
                if span is None:
                    continue
                offset = message.offset() or 0
                if message.error() is None:
                    found[(tp, span[0])] = self._known[(tp, *span)] = min(offset, span[1])
                elif offset >= span[1]:  # the end, read_committed: only markers were left
                    found[(tp, span[0])] = self._known[(tp, *span)] = span[1]
                # else: stopped at the last stable offset, an open transaction beyond it
        finally:
            scanner.unassign()
        return found

    def records(self, topic: str) -> list[Any]:
        timeout = self._settings.connect_timeout
        count = self._partitions([topic])
        marks = dlq.watermarks(self._reader, topic, len(count), timeout)
        spans = {(topic, p): span for p, span in marks.items()}
        # A reader of its own: a consumer left assigned answers metadata queries slowly.
        reader = kafka.consumer(self._settings, f"{self._name}.testing-reader",
                                **{"enable.partition.eof": True})
        try:
            found = [m for batch in dlq.read_spans(reader, spans) for m in batch]
        finally:
            reader.close()
        return sorted(found, key=lambda m: (m.partition(), m.offset()))

    def close(self) -> None:
        for consumer in [self._reader, self._scanner, *self._offsets.values()]:
            consumer.close()
