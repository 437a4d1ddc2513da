"""Three broker restarts in a row, long and short, while one worker drains a backlog whose
tasks send results: every task runs, and the worker goes on after each restart.

While the broker is down no acknowledgement arrives, so the worker fills up (``max_buffered``)
and, once full for ``PAUSE_WHEN_FULL_FOR``, pauses its partitions; a long outage then costs
it its partitions (session timeout). librdkafka keeps a partition's pause flag across losing
it and getting it back, so a worker that forgot it had paused them would stay assigned and
idle for good: the progress check after each restart catches that.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from streamtask.config import WorkerSettings
from streamtask.worker import PAUSE_WHEN_FULL_FOR
from tests.helpers import missing, recorder_run, summary, wait_until

pytestmark = pytest.mark.serial  # takes its broker down: run alone (`make test`)

TASKS = 12_000
LONG = WorkerSettings().session_timeout_ms / 1000 + PAUSE_WHEN_FULL_FOR
"""Long enough to fill up, pause, and lose the partitions to the session timeout."""
SHORT = PAUSE_WHEN_FULL_FOR + 2
"""Long enough to fill up and pause, too short to lose the partitions."""
PROGRESS = 300
"""Executions the worker must add after each restart before the next one strikes."""


@pytest.mark.long
@pytest.mark.timeout(420)
def test_three_broker_restarts_in_a_row_leave_no_worker_idle(
        kafka, unique: str, tmp_path: Path) -> None:
    if kafka.local is None:
        pytest.skip("the broker is external (STREAMTASK_BOOTSTRAP or a container): "
                    "this test must stop and start it")
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=0.001, emit=True) as run:
        run.send(TASKS)
        worker = run.start_worker("--stage", "work", "--concurrency", "2")
        for number, outage in enumerate((LONG, SHORT, LONG), start=1):
            before = len(run.executions())
            run.wait_for_executions(before + PROGRESS, timeout=90, watch=[worker])
            assert missing(run.executions(), TASKS), f"the backlog ran out before restart {number}"
            stopped = len(worker.output())
            try:
                kafka.local.down()
                wait_until(lambda at=stopped: "Connection refused" in worker.output()[at:], 30,
                           "the worker notices the broker is gone", worker.describe)
                time.sleep(outage)
                kafka.local.up(timeout=120)
            finally:
                kafka.local.up(timeout=120)  # returns at once when it runs: never leave it down
        run.wait_until_all_ran(TASKS, timeout=180, watch=[worker])
        output = worker.output()
        assert "partitions.lost" in output, "no outage was long enough to lose the partitions"
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.describe()
        executions = run.executions()
        assert not missing(executions, TASKS), summary(executions, TASKS)
