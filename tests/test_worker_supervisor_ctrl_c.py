"""Ctrl-C under ``streamtask worker --processes 2``: a terminal sends SIGINT to the whole
process group (the supervisor and its children); the children drain once, their tasks in
flight finish and are committed, everything exits 0, and no task runs again afterwards."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.helpers import duplicates, missing, recorder_run, summary

TASKS = 300
TASK_SECONDS = 0.2
"""Slow enough that each child has tasks in flight when Ctrl-C comes."""


@pytest.mark.timeout(180)
def test_ctrl_c_drains_supervised_children_and_reruns_nothing(
        kafka, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=TASK_SECONDS) as run:
        run.send(TASKS)
        supervisor = run.start_worker("--processes", "2", "--concurrency", "4",
                                      "--drain-timeout", "20")
        run.wait_for_executions(40, timeout=60, watch=[supervisor])
        os.killpg(supervisor.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert supervisor.wait(timeout=60) == 0, supervisor.describe()
        output = supervisor.output()
        assert output.count(" worker.stopping worker=") == 2, supervisor.describe()
        assert "task.abandoned" not in output, supervisor.describe()
        stopped_at = len(run.executions())
        assert missing(run.executions(), TASKS), "every task ran before Ctrl-C"

        rest = run.start_worker("--concurrency", "16")
        run.wait_until_all_ran(TASKS, timeout=90, watch=[rest])
        rest.signal(signal.SIGTERM)
        assert rest.wait(timeout=30) == 0, rest.describe()
        executions = run.executions()
        assert duplicates(executions) == 0, (
            f"{stopped_at} executions before the restart; {summary(executions, TASKS)}")
