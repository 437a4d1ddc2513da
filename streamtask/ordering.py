"""Per-key lanes: tasks with the same key run one at a time, in offset order.

Other keys run in parallel, so concurrency is not capped by the partition count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyLanes(Generic[T]):
    """A queue per active key; the head of each lane is the one running item of that key."""

    def __init__(self) -> None:
        self._lanes: dict[object, deque[T]] = {}

    def admit(self, key: object, item: T) -> bool:
        """Add ``item``; True when it may start now (no other item of its key is active)."""
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = deque((item,))
            return True
        lane.append(item)
        return False

    def release(self, key: object) -> T | None:
        """The active item of ``key`` finished: return the next one of that key to start."""
        lane = self._lanes[key]
        lane.popleft()
        if lane:
            return lane[0]
        del self._lanes[key]
        return None

    def discard_waiting(self, keep: Callable[[T], bool]) -> list[T]:
        """Remove waiting items (never a lane's active head) for which ``keep`` is False.

        Used when partitions are revoked: their queued tasks go back to the group uncommitted,
        while an active head finishes (or is released by the caller) as usual.
        """
        removed: list[T] = []
        for lane in self._lanes.values():
            if len(lane) < 2:
                continue
            head, *rest = lane
            removed.extend(item for item in rest if not keep(item))
            lane.clear()
            lane.append(head)
            lane.extend(item for item in rest if keep(item))
        return removed

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())
