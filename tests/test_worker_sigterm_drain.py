"""SIGTERM mid-run drains: running tasks finish, their offsets are committed, the worker exits
0 within its drain timeout, and a worker started afterwards runs none of them again.

Tasks not started at SIGTERM stay uncommitted and go to the next worker; since tasks start in
offset order per partition, every task of the first worker lies below its committed position.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import missing, recorder_run, summary, wait_for_assignment

TASKS = 1000
DRAIN_TIMEOUT = 10.0
TASK_SECONDS = 0.05
"""Long enough that SIGTERM finds tasks running, which the drain must let finish."""


@pytest.mark.timeout(120)
def test_sigterm_drains_and_commits_so_no_finished_task_runs_again(
        kafka, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=TASK_SECONDS) as run:
        run.send(TASKS)
        options = ("--concurrency", "8", "--drain-timeout", str(DRAIN_TIMEOUT))
        first = run.start_worker(*options)
        run.wait_for_executions(300, timeout=60, watch=[first])
        first.signal(signal.SIGTERM)
        assert first.wait(timeout=DRAIN_TIMEOUT) == 0, first.describe()
        by_first = {e.n for e in run.executions()}
        assert len(by_first) < TASKS, "SIGTERM came after the last task: not mid-run"

        second = run.start_worker(*options)

        # It must be running (signal handlers installed) before all ran and it is stopped.

        wait_for_assignment(second, run.stage.topic)
        run.wait_until_all_ran(TASKS, timeout=60, watch=[second])
        second.signal(signal.SIGTERM)
        assert second.wait(timeout=DRAIN_TIMEOUT) == 0, second.describe()

        executions = run.executions()
        runs = Counter((e.n, e.pid) for e in executions)
        assert set(Counter(e.pid for e in executions)) == {first.pid, second.pid}, (
            summary(executions, TASKS))
        again = sorted(n for (n, pid) in runs if pid == second.pid and n in by_first)
        assert not again, (f"{len(again)} tasks finished before SIGTERM ran again in the next "
                           f"worker (first: {again[:10]}); {summary(executions, TASKS)}")
        assert not missing(executions, TASKS), summary(executions, TASKS)
        assert len(executions) == TASKS, summary(executions, TASKS)
