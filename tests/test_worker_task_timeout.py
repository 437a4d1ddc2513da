"""A task past its deadline counts as a timeout failure and the worker stays healthy."""

from __future__ import annotations

import asyncio
import threading
import time

from streamtask import Task
from streamtask.retry import RetryPolicy
from tests.helpers import wait_until
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


def test_a_timed_out_handler_keeps_its_key_until_it_really_ends(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    spans: dict[int, tuple[float, float]] = {}

    @app.stage("slow", partitions=1, timeout=0.3, concurrency=4,
               retry=RetryPolicy(max_attempts=1))
    def slow(task: Task) -> None:
        began = time.monotonic()
        if task.payload["n"] == 0:
            time.sleep(2.0)  # past its timeout; Python cannot stop it
        spans[task.payload["n"]] = (began, time.monotonic())

    send_all(app, "slow", [{"n": 0}, {"n": 1}], key="same-key")
    stats = run_worker(app, max_tasks=2, idle_timeout=10)
    assert stats.counts["task.timed_out"] == 1 and stats.counts["task.succeeded"] == 1
    wait_until(lambda: 0 in spans, 10, "the abandoned handler returns")
    assert spans[1][0] >= spans[0][1], f"two tasks of one key overlapped: {spans}"


def test_hung_handlers_get_a_bounded_number_of_replacement_threads(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    peak: list[int] = []

    def handler_threads() -> int:
        return sum(t.name == "streamtask-handler" for t in threading.enumerate())

    @app.stage("hung", partitions=1, timeout=0.2, concurrency=1,
               retry=RetryPolicy(max_attempts=1))
    def hung(task: Task) -> None:
        peak.append(handler_threads())
        time.sleep(1.5)

    before = handler_threads()
    send_all(app, "hung", [{"n": n} for n in range(5)])
    stats = run_worker(app, max_tasks=5, idle_timeout=10)
    assert stats.counts["task.timed_out"] == 5
    # concurrency 1: one thread plus at most one replacement while an abandoned one runs
    assert max(peak) - before <= 2, f"handler threads seen: {peak} (before: {before})"
