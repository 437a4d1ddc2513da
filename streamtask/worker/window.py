"""The held window: what a crash can make run again, bounded.

After a crash a partition restarts from its last committed position, so every task received
at or above that position may run again, finished or not. A task that finished above an
unfinished one (one slow task, the others flowing past it) keeps its offset above the
position until the slow one ends. So the worker counts, as held, every received task not
yet below its partition's commit position, and takes no record while it holds
``max_buffered`` of them. A partition whose finished tasks pile up above an unfinished one
may hold only half of that (``per_partition``): beyond, it is paused until its position
catches up, so one slow task holds up its own partition and not the whole worker. Tasks that
merely wait their turn do not pause a partition (pausing drops librdkafka's prefetch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from streamtask.worker.job import TopicPartition
from streamtask.worker.offsets import PartitionOffsets


class HeldWindow:
    """Counts held tasks per partition and says when a partition must pause or may resume."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """Held tasks of all partitions together (``WorkerSettings.max_buffered``)."""
        self.per_partition = max(1, limit // 2)
        self.paused: set[TopicPartition] = set()
        """Partitions paused because they alone hold ``per_partition`` tasks."""

    @staticmethod
    def held(partitions: Mapping[TopicPartition, PartitionOffsets]) -> int:
        """Received tasks not yet below their partition's commit position."""
        return sum(offsets.unfinished for offsets in partitions.values())

    def overfull(self, tp: TopicPartition, offsets: PartitionOffsets) -> bool:
        """True once, when the tasks held back behind ``tp``'s position reach its share:
        pause it."""
        if offsets.finished_ahead < self.per_partition or tp in self.paused:
            return False
        self.paused.add(tp)
        return True

    def drained(self, tp: TopicPartition, offsets: PartitionOffsets) -> bool:
        """True once, when a paused ``tp``'s held-back tasks are down to half its share:
        resume it."""
        if tp not in self.paused or offsets.finished_ahead > self.per_partition // 2:
            return False
        self.paused.discard(tp)
        return True

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions that left: their pause is reset when they come back."""
        self.paused.difference_update(tps)
