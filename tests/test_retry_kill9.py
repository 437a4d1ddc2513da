"""``kill -9`` of workers while tasks climb the retry ladder loses nothing: a failed task's
input offset moves only after its retry record is acknowledged, and a retry level's offset
only after the retried task finished."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.helpers import missing, read_to_end, recorder_run, summary, wait_for_assignment

TASKS = 2000
FAIL_EVERY = 4
TASK_SECONDS = 0.02
"""Slow enough (8 threads: ~400 tasks/s) that three doomed workers, each killed ~0.5 s after
150 executions, leave most of the backlog to the last one: with 2 ms tasks the first worker
finished nearly everything and a later round waited for executions that no longer existed."""


@pytest.mark.timeout(180)
def test_kill9_during_retries_loses_nothing(kafka, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=TASK_SECONDS,
                      fail_every=FAIL_EVERY) as run:
        run.send(TASKS)
        for _ in range(3):
            doomed = run.start_worker("--concurrency", "8")
            before = len(run.executions())
            run.wait_for_executions(before + 150, timeout=60, watch=[doomed])
            time.sleep(0.5)  # retries produced and some due, mid-ladder
            assert doomed.kill9() == -signal.SIGKILL
        ran = {e.n for e in run.executions()}
        assert len(ran) < TASKS, "the kills came after every task ran: not mid-run"

        last = run.start_worker("--concurrency", "8")

        # It must be running (signal handlers installed) before all ran and it is stopped.

        wait_for_assignment(last, run.stage.topic)
        run.wait_until_all_ran(TASKS, timeout=120, watch=[last])
        last.signal(signal.SIGTERM)
        assert last.wait(timeout=30) == 0, last.describe()

        # Every multiple of FAIL_EVERY can only have succeeded on a retry level.
        executions = run.executions()
        assert not missing(executions, TASKS), summary(executions, TASKS)
        assert read_to_end(kafka.bootstrap, run.stage.dlq_topic) == []
