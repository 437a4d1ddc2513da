"""Which offset of a partition is safe to commit.

Tasks of one partition finish out of order when they run concurrently. The committable
position is the lowest offset not yet finished: everything below it is durable. The
position never moves backwards.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Offsets in flight for one partition, in the order they were received."""

    __slots__ = ("_done", "_in_flight", "_last_received", "committed", "position")

    def __init__(self) -> None:
        self._in_flight: deque[int] = deque()
        self._done: set[int] = set()
        self._last_received = -1
        self.position: int | None = None
        """Next offset to commit (lowest unfinished, or one past the last finished)."""
        self.committed: int | None = None
        """The position last handed to a commit."""

    def received(self, offset: int) -> bool:
        """Track a record received in offset order; False for one already received.

        librdkafka may hand out a record again after a pause/resume; its first copy is
        already tracked (running, or finished and awaiting commit), so the copy is skipped.
        """
        if offset <= self._last_received:
            return False
        self._last_received = offset
        self._in_flight.append(offset)
        return True

    def finished(self, offset: int) -> None:
        """Mark a task durable (ran and everything it produced is acknowledged)."""
        self._done.add(offset)
        in_flight, done = self._in_flight, self._done
        while in_flight and in_flight[0] in done:
            head = in_flight.popleft()
            done.discard(head)
            self.position = head + 1

    @property
    def unfinished(self) -> int:
        """Received and not yet below the position (a crash may run these again)."""
        return len(self._in_flight)

    @property
    def finished_ahead(self) -> int:
        """Finished but above an unfinished offset: held back from the commit position."""
        return len(self._done)

    def to_commit(self) -> int | None:
        """The position to commit now, or None if nothing moved since the last commit."""
        if self.position is None or self.position == self.committed:
            return None
        return self.position
