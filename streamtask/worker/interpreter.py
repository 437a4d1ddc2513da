"""Interpreter settings for a process that exists to run a worker.

A worker keeps a window of tasks alive (decoded tasks, their records, their outcomes) while
it allocates a few dozen objects per task, so with CPython's default thresholds the cyclic
collector ran a young collection every few dozen tasks and a full one, over every object of
the process, several times a second: about 2 µs of a 25 µs no-op task (measured with
``streamtask bench``). Freezing what exists after start-up takes the long-lived objects
(modules, schemas, clients) out of every later collection, and a higher first threshold lets
most short-lived tasks die by reference counting before a collection sees them.

Process entry points call :func:`tune_for_worker` (the CLI's ``worker`` command, the bench's
measured child); a :class:`~streamtask.worker.Worker` embedded in another program leaves that
program's interpreter as it is.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 10_000
"""Container allocations between young collections (CPython's default: 700)."""


def tune_for_worker() -> None:
    """Freeze the start-up heap and collect young objects less often; call once, after imports."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
