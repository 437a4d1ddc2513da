"""Partitions of retry levels held back until their head record is due.

A retry level is FIFO by due time (one fixed delay per topic), so when its head record is
not yet due the whole partition waits: the worker pauses it and seeks back to that record,
and resumes it once the due time has passed. Nothing sleeps; other partitions keep flowing.
"""

from __future__ import annotations

from collections.abc import Iterable


class DueTimes:
    """Deferred partitions and when each may resume (epoch ms)."""

    def __init__(self) -> None:
        self._due: dict[tuple[str, int], int] = {}

    def defer(self, tp: tuple[str, int], due_ms: int) -> None:
        self._due[tp] = due_ms

    def __contains__(self, tp: object) -> bool:
        return tp in self._due

    def pop_due(self, now_ms: int) -> list[tuple[str, int]]:
        """Partitions whose due time has come; they are no longer deferred."""
        ready = [tp for tp, due in self._due.items() if due <= now_ms]
        for tp in ready:
            del self._due[tp]
        return ready

    def seconds_until_next(self, now_ms: int) -> float | None:
        if not self._due:
            return None
        return max(0.0, (min(self._due.values()) - now_ms) / 1000)

    def drop(self, tps: Iterable[tuple[str, int]]) -> None:
        for tp in tps:
            self._due.pop(tp, None)
