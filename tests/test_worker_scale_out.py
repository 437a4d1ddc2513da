"""Two worker processes in one consumer group share 10,000 tasks, and each runs exactly once.

A clean run (no crash, no restart) must not repeat a task even though the group rebalances
when the second worker joins: the revoked partitions are drained and committed first.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import recorder_run, summary, wait_for_assignment

TASKS = 10_000


@pytest.mark.timeout(180)
def test_two_workers_run_every_task_exactly_once_and_share_the_work(
        kafka, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=0.001) as run:
        first = run.start_worker("--concurrency", "8")
        second = run.start_worker("--concurrency", "8")
        wait_for_assignment(first, run.stage.topic)
        wait_for_assignment(second, run.stage.topic)

        run.send(TASKS)
        run.wait_until_all_ran(TASKS, timeout=120, watch=[first, second])
        for worker in (first, second):
            worker.signal(signal.SIGTERM)
        for worker in (first, second):
            assert worker.wait(timeout=30) == 0, worker.describe()

        executions = run.executions()
        assert len(executions) == TASKS, summary(executions, TASKS)
        per_pid = Counter(e.pid for e in executions)
        assert set(per_pid) == {first.pid, second.pid}, (
            f"both workers should have run tasks, executions per pid: {dict(per_pid)}")
