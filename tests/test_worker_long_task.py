"""A task longer than max.poll.interval.ms causes no rebalance and runs exactly once."""

from __future__ import annotations

import time

from streamtask import Task
from tests.inprocess import new_app, run_worker, send_all


def test_task_twice_as_long_as_max_poll_interval_runs_once(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    runs: list[str] = []

    @app.stage("slow", partitions=1)
    def slow(task: Task) -> None:
        time.sleep(task.payload["seconds"])
        runs.append(task.id)

    send_all(app, "slow", [{"seconds": 6.0}, {"seconds": 0.0}])
    stats = run_worker(app, max_tasks=2, session_timeout_ms=2000, max_poll_interval_ms=3000)
    assert len(runs) == 2
    assert stats.counts.get("partitions.lost", 0) == 0
    # One assignment per consumer (inputs, retry levels), and no rebalance until shutdown.
    assert stats.counts["partitions.assigned"] == 2
    assert stats.counts["partitions.revoked"] == 2
    # Nothing left to redo: a fresh worker of the same group finds no work.
    again = run_worker(app, idle_timeout=2.0)
    assert again.counts.get("task.succeeded", 0) == 0
    assert len(runs) == 2
