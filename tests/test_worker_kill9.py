"""``kill -9`` of a worker mid-run, three times, then a restart: no task is lost, and the
tasks run twice are bounded by what a worker holds uncommitted when it dies.

Each doomed worker is killed once the group's committed offsets moved and it ran some more
tasks, so every kill lands mid-run with committed progress behind it and executed but
uncommitted tasks. The recorder logs each execution with one O_APPEND write, so executions of
killed workers are all counted.

Two bounds, both of which a fault could break: after each kill, the tasks that ran but are
not covered by the dead worker's last commit are at most what the settings allow (held window
plus ``commit_every``); and the duplicates in the end are at most the sum of those, measured
(a task run again though its offset was committed would exceed it).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from streamtask.config import WorkerSettings
from tests.helpers import (
    duplicate_bound,
    duplicates,
    missing,
    recorder_run,
    summary,
    wait_for_assignment,
)

TASKS = 6000
KILLS = 3
CONCURRENCY = 8
RUN_ON_AFTER_COMMIT = 100
"""Executions a doomed worker logs after a commit was seen, before it is killed."""
TASK_SECONDS = 0.005
"""At most 1,600 tasks/s with 8 threads, fewer than ``commit_every`` (2,000) per commit
interval (1 s): each doomed worker's first commit then covers only part of what is left, so
the third kill still lands before the last task (with 2 ms tasks it could commit everything)."""


@pytest.mark.timeout(180)
def test_kill9_mid_run_loses_no_task_and_duplicates_are_bounded(
        kafka, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=TASK_SECONDS) as run:
        run.send(TASKS)
        committed = 0
        uncommitted = 0
        per_kill, formula = duplicate_bound(1, WorkerSettings(concurrency=CONCURRENCY))
        for kill in range(1, KILLS + 1):
            doomed = run.start_worker("--concurrency", str(CONCURRENCY))
            committed = run.wait_for_commit_beyond(committed, timeout=60, watch=[doomed])
            run.wait_for_executions(len(run.executions()) + RUN_ON_AFTER_COMMIT, timeout=30,
                                    watch=[doomed])
            assert doomed.kill9() == -signal.SIGKILL
            committed = run.committed()  # final: nothing else commits now
            assert committed < TASKS, f"kill {kill} came after the last commit: not mid-run"
            ran_uncommitted = len({e.n for e in run.executions()}) - committed
            assert ran_uncommitted <= per_kill, (
                f"kill {kill}: {ran_uncommitted} tasks ran above the last commit > {formula}")
            uncommitted += ran_uncommitted

        last = run.start_worker("--concurrency", str(CONCURRENCY))

        # It must be running (signal handlers installed) before all ran and it is stopped.

        wait_for_assignment(last, run.stage.topic)
        run.wait_until_all_ran(TASKS, timeout=90, watch=[last])
        last.signal(signal.SIGTERM)
        assert last.wait(timeout=30) == 0, last.describe()

        executions = run.executions()
        assert not missing(executions, TASKS), summary(executions, TASKS)
        assert duplicates(executions) <= uncommitted, (
            f"{duplicates(executions)} duplicates exceed the {uncommitted} tasks that ran "
            f"above the last commit of a killed worker; {summary(executions, TASKS)}")
