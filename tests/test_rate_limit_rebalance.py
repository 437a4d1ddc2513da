"""Tasks waiting for a rate-limit token are not lost when their partitions move: a second
worker joins while the first holds a throttled backlog, and every task still runs."""

from __future__ import annotations

import threading
import uuid

import pytest

from streamtask import App, Task, Worker, WorkerSettings
from streamtask.kafka.topics import ensure
from streamtask.worker.ratelimit import RateLimit
from tests.helpers import wait_until

TASKS = 300


@pytest.mark.timeout(240)
def test_throttled_tasks_survive_a_rebalance(kafka) -> None:
    app = App(f"rl-{uuid.uuid4().hex[:8]}", kafka=kafka.settings)
    ran: set[int] = set()
    lock = threading.Lock()

    @app.stage("limited", partitions=4, rate_limit=RateLimit(40))
    def limited(task: Task) -> None:
        with lock:
            ran.add(task.payload["n"])

    ensure(app)
    with app.producer() as producer:
        for n in range(TASKS):
            producer.send("limited", {"n": n}, key=str(n))
        producer.flush(60)
    workers = [Worker(app, settings=WorkerSettings(concurrency=2)) for _ in range(2)]
    threads = [threading.Thread(target=w.run) for w in workers]
    threads[0].start()
    try:
        # the first worker holds a throttled backlog (all its tasks, at 40/s) ...
        wait_until(lambda: len(ran) >= 20, 120, "the first worker started tasks")
        assert workers[0].held > 20
        threads[1].start()  # ... when the second joins and partitions move
        wait_until(lambda: len(ran) == TASKS, 180, "every task ran",
                   lambda: f"{len(ran)} ran; missing {sorted(set(range(TASKS)) - ran)[:20]}")
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join(60)
