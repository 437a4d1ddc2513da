"""User code can never kill or wedge the worker: an async handler that raises CancelledError
itself, and an event subscriber that raises, are reported and the worker runs on."""

from __future__ import annotations

import asyncio
import logging
import queue
import time

from streamtask import Task, Worker, WorkerSettings
from streamtask.events import Event, EventBus
from streamtask.retry import RetryPolicy
from streamtask.worker.runners import AsyncRunner, Completion
from tests.helpers import Kept, read_to_end
from tests.inprocess import new_app, send_all


def test_an_async_handler_cancelling_itself_is_a_failure_not_a_lost_task(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    ran: list[int] = []

    @app.stage("cancels", partitions=1, retry=RetryPolicy(max_attempts=1))
    async def cancels(task: Task) -> None:
        ran.append(task.payload["n"])
        if task.payload["n"] == 0:
            raise asyncio.CancelledError  # its own, not the worker's

    send_all(app, "cancels", [{"n": n} for n in range(4)], key="one-key")
    worker = Worker(app, settings=WorkerSettings(drain_timeout=60))
    started = time.monotonic()
    stats = worker.run(max_tasks=4, idle_timeout=10)
    assert time.monotonic() - started < 55, "the shutdown drain waited for a vanished task"
    assert stats.counts["task.dead_lettered"] == 1 and stats.counts["task.succeeded"] == 3
    assert ran == [0, 1, 2, 3]  # its key's lane moved on
    [dead] = read_to_end(kafka.bootstrap, app.stages["cancels"].dlq_topic)
    assert dict(dead.headers())["kafka_dlt-exception-fqcn"].endswith(b"CancelledError")
    again = Worker(app).run(idle_timeout=2.0)
    assert again.counts.get("task.succeeded", 0) == 0  # every offset was committed


def test_a_coroutine_that_finishes_before_submit_returns_leaves_nothing_behind() -> None:
    completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
    runner = AsyncRunner(completions)
    try:
        async def instant(task: object) -> object:
            return task

        for n in range(500):
            runner.submit(n, instant, n)
        for _ in range(500):
            completions.get(timeout=10)
        deadline = time.monotonic() + 5
        while runner._futures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner._futures == {} and runner.executing() == []
    finally:
        runner.shutdown()


def test_a_failing_event_subscriber_is_logged_and_the_worker_runs_on(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    ran: list[int] = []
    app.stage("work", partitions=1)(lambda task: ran.append(task.payload["n"]))
    bus = EventBus()
    seen: list[Event] = []

    def broken(event: Event, fields: dict[str, object]) -> None:
        raise RuntimeError(f"subscriber bug on {event}")

    bus.subscribe(broken)
    bus.subscribe(lambda event, fields: seen.append(event))
    send_all(app, "work", [{"n": n} for n in range(5)])
    kept = Kept()
    logging.getLogger("streamtask.events").addHandler(kept)
    try:
        stats = Worker(app, events=bus).run(max_tasks=5, idle_timeout=10)
    finally:
        logging.getLogger("streamtask.events").removeHandler(kept)
    assert sorted(ran) == list(range(5)) and stats.counts["task.succeeded"] == 5
    assert seen.count(Event.TASK_SUCCEEDED) == 5  # later subscribers still hear everything
    failures = [line for line in kept.lines if "event.subscriber_failed" in line]
    assert len(failures) == 1 and "subscriber bug" in failures[0]
