"""Exactly-once: a worker loses its partition while it holds finished tasks' outputs, gets the
partition back and runs those tasks again; a read_committed reader still sees each result
once (the outputs held for the lost partition are dropped, not committed with the new ones).

The loss is real: the loop is held up (an event subscriber sleeps) past
``max.poll.interval.ms``, so librdkafka leaves the group and reports the partitions lost.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from streamtask import Task, Worker, WorkerSettings
from streamtask.events import Event, EventBus
from tests.inprocess import new_app, send_all
from tests.topic_reader import read_to_end

TASKS = 40
STALL_AT = 20
"""The loop stalls at this many successes, with their outputs held (no commit yet)."""
MAX_POLL_MS = 3000


@pytest.mark.timeout(120)
def test_outputs_held_for_a_lost_partition_are_not_committed(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)

    @app.stage("double", partitions=1, exactly_once=True, then="out")
    def double(task: Task) -> dict[str, int]:
        return {"n": task.payload["n"], "value": 2 * task.payload["n"]}

    @app.stage("out", partitions=1)
    def out(task: Task) -> None:
        """Not run: its topic is the output, read directly."""

    send_all(app, "double", [{"n": n} for n in range(TASKS)])
    events = EventBus()
    successes = [0]
    stalled = threading.Event()

    def stall_once(event: Event, _fields: dict[str, object]) -> None:
        if event is Event.TASK_SUCCEEDED:
            successes[0] += 1
            if successes[0] == STALL_AT and not stalled.is_set():
                stalled.set()
                time.sleep(MAX_POLL_MS / 1000 + 3)

    events.subscribe(stall_once)
    # No commit before the stall (long interval, high count): every output is still held.
    settings = WorkerSettings(concurrency=1, commit_interval=60, session_timeout_ms=MAX_POLL_MS,
                              max_poll_interval_ms=MAX_POLL_MS)
    worker = Worker(app, ["double"], settings, events=events)
    stats = worker.run(idle_timeout=4.0)
    assert stats.counts.get("partitions.lost", 0) >= 1, stats.counts
    assert stats.counts["task.succeeded"] > TASKS, "no task ran again after the loss"

    results = Counter(app.codec.decode(m.value()).payload["n"]
                      for m in read_to_end(kafka.bootstrap, app.stages["out"].topic))
    assert sorted(results) == list(range(TASKS))
    assert {n: c for n, c in results.items() if c > 1} == {}
