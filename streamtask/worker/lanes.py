"""Per-key lanes: tasks with the same key run one at a time, in offset order.

Other keys run in parallel, so concurrency is not capped by the partition count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyLanes(Generic[T]):
    """The keys with an active item, each with the items of that key waiting behind it.

    Most keys never have a second task in flight, so a lane holds no queue until one waits
    (a deque per task cost about half a microsecond on the worker's hot path).
    """

    def __init__(self) -> None:
        self._waiting: dict[object, deque[T] | None] = {}

    def admit(self, key: object, item: T) -> bool:
        """Add ``item``; True when it may start now (no other item of its key is active)."""
        waiting = self._waiting
        if key not in waiting:
            waiting[key] = None
            return True
        queue = waiting[key]
        if queue is None:
            waiting[key] = deque((item,))
        else:
            queue.append(item)
        return False

    def release(self, key: object) -> T | None:
        """The active item of ``key`` finished: return the next one of that key to start."""
        queue = self._waiting.pop(key)
        if not queue:
            return None
        following = queue.popleft()
        self._waiting[key] = queue or None
        return following

    def discard_waiting(self, keep: Callable[[T], bool]) -> list[T]:
        """Remove waiting items (never a lane's active item) for which ``keep`` is False.

        Used when partitions are revoked: their queued tasks go back to the group uncommitted,
        while an active item finishes (or is released by the caller) as usual.
        """
        removed: list[T] = []
        for key, queue in self._waiting.items():
            if not queue:
                continue
            removed.extend(item for item in queue if not keep(item))
            kept = [item for item in queue if keep(item)]
            self._waiting[key] = deque(kept) if kept else None
        return removed

    def __len__(self) -> int:
        """Active and waiting items."""
        return sum(1 + len(queue or ()) for queue in self._waiting.values())
