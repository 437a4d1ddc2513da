"""Exactly-once stages: outputs and input offsets committed in one Kafka transaction.

With concurrency, tasks of a partition finish out of order, and the input position that can
be committed is its lowest unfinished offset. So a finished task's outputs (results, retry
records, dead letters, changelog updates) are *held* until its offset falls below the
committable position; at each commit the held outputs below it are produced into the open
transaction together with the offsets (``send_offsets_to_transaction``), and the transaction
commits. Downstream consumers read ``read_committed``, so they see each output exactly once.
Any transaction error stops the worker: the open transaction is aborted by the broker, its
outputs stay invisible, and the uncommitted tasks run again after a restart.

A transactional call that never returns is an error too. librdkafka's
``send_offsets_to_transaction`` ignores its timeout when the group coordinator goes away
mid-call (librdkafka issue 5456): after a broker restart an exactly-once worker sat in it
for good, alive and idle. So each call that talks to the cluster runs on a helper thread and
the loop waits for it at most its timeout plus ``HANG_GRACE``; past that the worker stops as
for any transaction error, and makes no further transactional call on that producer.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from streamtask.errors import KafkaError
from streamtask.kafka import clients as kafka
from streamtask.worker.job import TopicPartition

HANG_GRACE = 10.0
"""Seconds past its own timeout a transactional call may take before it counts as hung."""


class Transactions:
    """The open transaction of one worker and the outputs held back from it."""

    def __init__(self, producer: Any, timeout: float = 30.0) -> None:
        self._producer = producer
        self._timeout = timeout
        self._held: dict[TopicPartition, list[tuple[int, int, Sequence[Any]]]] = {}
        self._order = itertools.count()
        self._dirty = False
        self._broken: str | None = None
        """Why the producer may not be used any more (a call hung), once one did."""
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
            if args:  # a call to the cluster, with a timeout: bounded whatever librdkafka does
                self._bounded(method, *args)
            else:
                method()
        except kafka.KafkaException as exc:
            raise _failed(str(exc)) from exc

    def _bounded(self, method: Callable[..., Any], *args: Any) -> None:
        """``method(*args)`` on a helper thread; raises what it raised, or a
        :class:`KafkaError` when it has not returned within the timeout plus ``HANG_GRACE``."""
        if self._broken is not None:
            raise _failed(self._broken)
        raised: list[BaseException] = []
        done = threading.Event()

        def call() -> None:
            try:
                method(*args)
            except BaseException as exc:  # handed to the loop's thread below
                raised.append(exc)
            finally:
                done.set()

        threading.Thread(target=call, daemon=True, name="streamtask-transaction").start()
        if not done.wait(self._timeout + HANG_GRACE):
            self._broken = (f"{getattr(method, '__name__', 'a transactional call')} did not "
                            f"return within {self._timeout + HANG_GRACE:.0f}s")
            raise _failed(self._broken)
        if raised:
            raise raised[0]


def _failed(reason: str) -> KafkaError:
    return KafkaError(f"transaction failed ({reason}); stopping so the uncommitted tasks run "
                      "again after a restart (their outputs stay invisible to read_committed "
                      "readers)")
