"""Record timestamps on the fake clock, for a test run on a real broker.

In memory, a record's timestamp is the fake clock's time when it was written. On a broker it
is CreateTime: the wall clock's. The worker compares record timestamps with due times read
from :mod:`streamtask.clock` (a retry's due time is capped at its record's timestamp plus
twice its level's delay), so after ``advance(days=...)`` a retry written at fake time T
would carry a wall timestamp days before T, and its cap would release it at once.

Writing the fake time as the record's timestamp is no answer: a broker refuses timestamps
more than ``message.timestamp.after.max.ms`` ahead of its clock (1 hour by default since
Kafka 4.0). So the run keeps a :class:`Timeline` of every move of the fake clock, and the
consumers of a real-broker run hand the worker each record with its CreateTime turned into
the fake time it was written at (:class:`RetimedMessage`). The fake clock stands still
between moves, so that time is exact: the clock's value at the last move before the record.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from typing import Any


class Timeline:
    """Each move of a fake clock: (wall time, fake time from then on), in epoch ms."""

    def __init__(self, fake_ms: int) -> None:
        self._walls = [time.time_ns() // 1_000_000]
        self._fakes = [fake_ms]
        self._lock = threading.Lock()

    def moved(self, fake_ms: int) -> None:
        """The fake clock reads ``fake_ms`` from now on."""
        with self._lock:
            self._walls.append(time.time_ns() // 1_000_000)
            self._fakes.append(fake_ms)

    def fake_at(self, wall_ms: int) -> int:
        """The fake time at wall time ``wall_ms`` (the wall time itself before the run:
        the fake clock starts at the real time)."""
        with self._lock:
            index = bisect_right(self._walls, wall_ms) - 1
            return wall_ms if index < 0 else self._fakes[index]


class RetimedMessage:
    """A consumed confluent-kafka message whose timestamp is on the fake clock."""

    __slots__ = ("_message", "_timestamp")

    def __init__(self, message: Any, timestamp: tuple[int, int]) -> None:
        self._message = message
        self._timestamp = timestamp

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def __len__(self) -> int:
        return len(self._message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)


def retimed(message: Any, timeline: Timeline) -> Any:
    """``message`` with its timestamp on ``timeline``'s fake clock (as it is, without one)."""
    if message is None or message.error() is not None:
        return message
    kind, wall_ms = message.timestamp()
    if wall_ms < 0:  # TIMESTAMP_NOT_AVAILABLE
        return message
    return RetimedMessage(message, (kind, timeline.fake_at(wall_ms)))
