"""The worker: takes tasks from Kafka, runs their handlers, and makes each outcome durable.

``worker`` is the lifecycle (clients, the loop as named steps, rebalances, shutdown); the
other modules are the objects it composes, each owning its own state (see the README's
architecture section for the map and the path of one task).

The names below are loaded on first use: :mod:`streamtask.model.app` imports
:mod:`streamtask.worker.ratelimit` for its declarations, and an eager import of the worker
here would import the app back while it is being defined.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamtask.worker.worker import PAUSE_WHEN_FULL_FOR, TaskTimeout, Worker, WorkerStats

__all__ = ["PAUSE_WHEN_FULL_FOR", "TaskTimeout", "Worker", "WorkerStats"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("streamtask.worker.worker"), name)
    raise AttributeError(f"module 'streamtask.worker' has no attribute {name!r}")
