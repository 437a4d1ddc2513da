"""Records of retry levels held back until they are due.

A retry level is FIFO by due time (one fixed delay per topic), so when a record arrives
before it is due, the records behind it in its partition wait too: the worker holds them
here, in offset order, and releases each when its due time has come. Only when a partition
holds ``limit`` records is it paused (bounded memory), and it resumes once half of them are
out. Pausing is the exception because librdkafka drops what it prefetched for a paused
partition and may take up to a second to fetch again after the resume (measured here),
which would make retries late. Nothing sleeps; held records are not committed, so a crash
redelivers them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from streamtask.worker.job import TopicPartition


class HeldRecords:
    """Held records per retry-level partition, each with its due time (epoch ms)."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._held: dict[TopicPartition, deque[tuple[int, Any]]] = {}
        self.paused: set[TopicPartition] = set()
        """Partitions paused because they hold ``limit`` records."""

    def __contains__(self, tp: object) -> bool:
        return tp in self._held

    def __len__(self) -> int:
        # list() copies the values in one step under the GIL: metrics read this from their
        # own thread while the loop adds and removes partitions.
        return sum(len(held) for held in list(self._held.values()))

    def hold(self, tp: TopicPartition, due_ms: int, message: Any) -> bool:
        """Hold a record; True when its partition just reached the limit (pause it)."""
        held = self._held.setdefault(tp, deque())
        held.append((due_ms, message))
        if len(held) >= self.limit and tp not in self.paused:
            self.paused.add(tp)
            return True
        return False

    def release(self, now_ms: int) -> tuple[list[Any], list[TopicPartition]]:
        """Records now due, in offset order per partition, and the partitions to resume."""
        ready: list[Any] = []
        resume: list[TopicPartition] = []
        for tp, held in list(self._held.items()):
            while held and held[0][0] <= now_ms:
                ready.append(held.popleft()[1])
            if tp in self.paused and len(held) <= self.limit // 2:
                self.paused.discard(tp)
                resume.append(tp)
            if not held:
                del self._held[tp]
        return ready, resume

    def seconds_until_next(self, now_ms: int) -> float | None:
        if not self._held:
            return None
        return max(0.0, (min(held[0][0] for held in self._held.values()) - now_ms) / 1000)

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        """Forget held records of partitions that left: uncommitted, they are redelivered."""
        for tp in tps:
            self._held.pop(tp, None)
            self.paused.discard(tp)
