"""A task past its deadline counts as a timeout failure and the worker stays healthy."""

from __future__ import annotations

import asyncio
import threading

from streamtask import Task
from tests.inprocess import new_app, run_worker, send_all


def test_sync_task_past_deadline_times_out_and_others_complete(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    release = threading.Event()
    done: list[int] = []

    @app.stage("maybe_stuck", partitions=1, timeout=0.5, concurrency=2)
    def maybe_stuck(task: Task) -> None:
        if task.payload["stuck"]:
            release.wait(10)
        done.append(task.payload["n"])

    payloads = [{"n": 0, "stuck": True}] + [{"n": n, "stuck": False} for n in range(1, 21)]
    send_all(app, "maybe_stuck", payloads)
    try:
        stats = run_worker(app, max_tasks=len(payloads))
    finally:
        release.set()
    assert stats.counts["task.timed_out"] == 1
    assert stats.counts["task.succeeded"] == 20
    assert sorted(done)[-20:] == list(range(1, 21))


def test_async_task_past_deadline_is_cancelled(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    cancelled: list[int] = []

    @app.stage("sleepy", partitions=1, timeout=0.5)
    async def sleepy(task: Task) -> None:
        try:
            await asyncio.sleep(task.payload["seconds"])
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    send_all(app, "sleepy", [{"seconds": 30}, {"seconds": 0}])
    stats = run_worker(app, max_tasks=2)
    assert stats.counts["task.timed_out"] == 1
    assert stats.counts["task.succeeded"] == 1
    assert cancelled == [1]
