"""The wall clock every due time and timestamp of streamtask is read from.

Retry levels, delayed sends, join timeouts and task ids all compare or stamp epoch
milliseconds. They read them here, through one replaceable source, so that
:mod:`streamtask.testing` can move time forward (``advance``) and run due retries at once
instead of sleeping. Durations (handler timeouts, commit intervals) are measured with
``time.monotonic`` and are not affected.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["now_ms", "set_source"]

_source: Callable[[], int] = time.time_ns


def now_ms() -> int:
    """Epoch milliseconds, from the current source."""
    return _source() // 1_000_000


def set_source(source: Callable[[], int] | None) -> None:
    """Read epoch *nanoseconds* from ``source`` from now on (None: the system clock)."""
    global _source
    _source = source if source is not None else time.time_ns
