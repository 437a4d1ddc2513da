"""The execution trail records when each execution ended, even when its writer (a detached
subscriber, on a thread of its own) takes the event long after the worker emitted it: the
time travels with the event, it is not read when the trail's thread gets round to it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from streamtask import Task, Worker, WorkerSettings, clock
from streamtask.events import Event
from streamtask.ops import trail
from streamtask.ops.trail import TrailWriter
from tests.helpers import wait_until
from tests.inprocess import new_app, send_all

TASKS = 5
LATER_MS = 3_600_000
"""How far the clock moves while the trail's thread is held up: an hour, far beyond any
delay a loaded machine adds between a task's end and its event."""


class HeldTrail(TrailWriter):
    """A trail writer whose thread is held up on its first event until released (as a
    trail producing to a broker that stopped answering would be)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        self.release.wait(60)
        super().__call__(event, fields)


@pytest.mark.timeout(120)
def test_trail_times_are_the_executions_not_the_trail_threads(kafka, unique,
                                                              monkeypatch) -> None:
    shift = [0]
    monkeypatch.setattr(clock, "_source", lambda: time.time_ns() + shift[0])
    app = new_app(kafka.bootstrap, unique)
    ended: dict[str, int] = {}

    @app.stage("work", partitions=1)
    def work(task: Task) -> None:
        ended[task.id] = clock.now_ms()

    send_all(app, "work", [{"n": n} for n in range(TASKS)])
    worker = Worker(app, settings=WorkerSettings(commit_interval=0.2))
    held = HeldTrail(app, worker.worker_id)
    worker.events.subscribe(held)
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(worker.run(max_tasks=TASKS)),
                              daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker.counter.counts[Event.TASK_SUCCEEDED] == TASKS, 60,
                   "every task's success was emitted", lambda: f"ended {len(ended)}")
        shift[0] = LATER_MS * 1_000_000  # the trail's thread has not taken them yet
    finally:
        held.release.set()
    thread.join(60)
    assert out, "the worker did not stop"
    assert len(ended) == TASKS
    for task_id in ended:
        events = trail.read_run(app, task_id)
        assert [e["outcome"] for e in events] == ["succeeded"], events
        assert ended[task_id] <= events[0]["ended"] < ended[task_id] + LATER_MS // 2, (
            f"the trail says {task_id} ended at {events[0]['ended']}, its handler returned "
            f"at {ended[task_id]}")
