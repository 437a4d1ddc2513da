"""A stopping worker lets its detached event subscribers take every event it emitted, the
last one (``worker.stopped``, on which the trail makes its final flush) included, before
``run`` returns, and leaves none of their threads behind."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from streamtask import Worker, WorkerSettings
from streamtask.events import Event
from tests.inprocess import new_app, send_all

TASKS = 5


class Slow:
    """Takes 0.2 s per event: well behind the worker, well within its 10 s wait."""

    def __init__(self) -> None:
        self.seen: list[Event] = []

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        time.sleep(0.2)
        self.seen.append(event)


@pytest.mark.timeout(120)
def test_run_returns_once_a_slow_subscriber_took_every_event(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    app.stage("work", partitions=1)(lambda task: None)
    send_all(app, "work", [{"n": n} for n in range(TASKS)])
    worker = Worker(app, settings=WorkerSettings(commit_interval=0.2))
    slow = Slow()
    worker.events.subscribe(slow)
    stats = worker.run(max_tasks=TASKS, idle_timeout=60)
    assert stats.counts["task.succeeded"] == TASKS
    assert slow.seen.count(Event.TASK_SUCCEEDED) == TASKS, slow.seen
    assert slow.seen[-1] is Event.WORKER_STOPPED, slow.seen
    assert len(slow.seen) == sum(worker.counter.counts.values())  # it missed none
    left = [t.name for t in threading.enumerate() if t.name.startswith("streamtask-subscriber:")
            and "Slow" in t.name]
    assert left == [], left
