"""Two worker processes in one consumer group share 6,000 tasks, and each runs exactly once.

A clean run (no crash, no restart) must not repeat a task even though the group rebalances
when the second worker joins: the second one joins while the first is busy with the backlog,
and the revoked partitions' tasks in flight are drained and committed before they go.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import missing, recorder_run, summary, wait_for_assignment

TASKS = 6_000
TASK_SECONDS = 0.02
"""8 threads run at most 400 tasks/s: the backlog (15 s) outlasts the second worker's start."""


@pytest.mark.timeout(180)
def test_two_workers_run_every_task_exactly_once_and_share_the_work(
        kafka, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=TASK_SECONDS) as run:
        run.send(TASKS)
        first = run.start_worker("--concurrency", "8")
        run.wait_for_executions(500, timeout=60, watch=[first])
        second = run.start_worker("--concurrency", "8")
        wait_for_assignment(second, run.stage.topic)
        assert missing(run.executions(), TASKS), "the first worker finished before the rebalance"
        assert "partitions.revoked" in first.output(), first.describe()

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
