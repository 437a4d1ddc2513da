"""Exactly-once: a worker loses its partition while it holds finished tasks' outputs, gets the
partition back and runs those tasks again; a read_committed reader still sees each result
once (the outputs held for the lost partition are dropped, not committed with the new ones).
The same for a join, whose held outputs include its changelog updates.

The loss is real: the loop is held up (an event subscriber sleeps) past
``max.poll.interval.ms``, so librdkafka leaves the group and reports the partitions lost.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from streamtask import Task, Worker, WorkerSettings
from streamtask.events import Event, EventBus
from streamtask.model.pipeline import merged
from tests.inprocess import new_app, run_stages, send_all
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
    events.subscribe(_stall_once_at(Event.TASK_SUCCEEDED, STALL_AT), inline=True)
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


@pytest.mark.timeout(180)
def test_exactly_once_join_completes_each_fork_once_across_a_lost_partition(
        kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)

    @app.stage("pack", partitions=1, then=("send_email", "send_sms"))
    def pack(task: Task) -> dict[str, object]:
        return {"order": task.payload["order"]}

    @app.stage("send_email", partitions=1, then="notified")
    def send_email(task: Task) -> dict[str, object]:
        return {"email": task.payload["order"]}

    @app.stage("send_sms", partitions=1, then="notified")
    def send_sms(task: Task) -> dict[str, object]:
        return {"sms": task.payload["order"]}

    app.join("notified", branches=["send_email", "send_sms"], partitions=1, then="archive",
             exactly_once=True)(merged)

    @app.stage("archive", partitions=1)
    def archive(task: Task) -> None:
        """Not run: its topic is the join's output, read directly."""

    send_all(app, "pack", [{"order": n} for n in range(TASKS)])
    run_stages(app, {"pack": TASKS, "send_email": TASKS, "send_sms": TASKS})
    events = EventBus()
    events.subscribe(_stall_once_at(Event.JOIN_COMPLETED, STALL_AT), inline=True)
    settings = WorkerSettings(concurrency=1, commit_interval=60, session_timeout_ms=MAX_POLL_MS,
                              max_poll_interval_ms=MAX_POLL_MS)
    stats = Worker(app, ["notified"], settings, events=events).run(idle_timeout=4.0)
    assert stats.counts.get("partitions.lost", 0) >= 1, stats.counts
    assert stats.counts["join.completed"] > TASKS, "no fork completed again after the loss"

    archived = Counter(int(app.codec.decode(m.value()).payload["send_email"]["email"])
                       for m in read_to_end(kafka.bootstrap, app.stages["archive"].topic))
    assert archived == Counter(range(TASKS))


def _stall_once_at(wanted: Event, count: int) -> Callable[[Event, dict[str, object]], None]:
    """An event subscriber that holds up the worker's loop once, past max.poll.interval.ms
    (subscribed inline: a detached one would hold up only its own thread)."""
    seen = [0]

    def stall(event: Event, _fields: dict[str, object]) -> None:
        if event is wanted:
            seen[0] += 1
            if seen[0] == count:
                time.sleep(MAX_POLL_MS / 1000 + 3)

    return stall
