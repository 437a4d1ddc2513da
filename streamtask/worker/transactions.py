"""Exactly-once stages: outputs and input offsets committed in one Kafka transaction.

With concurrency, tasks of a partition finish out of order, and the input position that can
be committed is its lowest unfinished offset. So a finished task's outputs (results, retry
records, dead letters, changelog updates) are *held* until its offset falls below the
committable position; at each commit the held outputs below it are produced into the open
transaction together with the offsets (``send_offsets_to_transaction``), and the transaction
commits. Downstream consumers read ``read_committed``, so they see each output exactly once.
Any transaction error stops the worker: the open transaction is aborted by the broker, its
outputs stay invisible, and the uncommitted tasks run again after a restart.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from streamtask.errors import KafkaError
from streamtask.kafka import clients as kafka
from streamtask.worker.job import TopicPartition


class Transactions:
    """The open transaction of one worker and the outputs held back from it."""

    def __init__(self, producer: Any, timeout: float = 30.0) -> None:
        self._producer = producer
        self._timeout = timeout
        self._held: dict[TopicPartition, list[tuple[int, int, Sequence[Any]]]] = {}
        self._order = itertools.count()
        self._dirty = False
        self._call(producer.init_transactions, timeout)
        self._call(producer.begin_transaction)

    def hold(self, tp: TopicPartition, offset: int, outputs: Sequence[Any]) -> None:
        """Keep a finished task's outputs until its offset is committed with them."""
        if outputs:
            heapq.heappush(self._held.setdefault(tp, []), (offset, next(self._order), outputs))

    def produced(self) -> None:
        """Something was produced directly into the open transaction."""
        self._dirty = True

    def commit(self, positions: dict[TopicPartition, int], offsets: list[tuple[Any, list[Any]]],
               produce: Callable[[Any], None]) -> bool:
        """Produce held outputs below ``positions``, add ``offsets``, commit; False if idle.

        ``offsets`` pairs each consumer with the positions of its partitions to commit.
        """
        for tp, held in self._held.items():
            position = positions.get(tp)
            while held and position is not None and held[0][0] < position:
                for output in heapq.heappop(held)[2]:
                    produce(output)
                    self._dirty = True
        if not self._dirty and not any(mine for _, mine in offsets):
            return False
        for consumer, mine in offsets:
            if mine:
                self._call(self._producer.send_offsets_to_transaction, mine,
                           consumer.consumer_group_metadata(), self._timeout)
        self._call(self._producer.commit_transaction, self._timeout)
        self._call(self._producer.begin_transaction)
        self._dirty = False
        return True

    def drop(self, tps: set[TopicPartition]) -> None:
        """Forget held outputs of partitions that left: their tasks run again elsewhere."""
        for tp in tps:
            self._held.pop(tp, None)

    def _call(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except kafka.KafkaException as exc:
            raise KafkaError(
                f"transaction failed ({exc}); stopping so the uncommitted tasks run again "
                "after a restart (their outputs stay invisible to read_committed readers)"
            ) from exc
