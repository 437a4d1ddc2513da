"""The broker restarts (same data dir) while a worker runs: the worker rides it out and no
task is lost; tasks whose commit was lost with the broker may run again, which is allowed.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from streamtask.config import WorkerSettings
from tests.helpers import missing, recorder_run, summary, wait_until

pytestmark = pytest.mark.serial  # takes its broker down: run alone (`make test`)

TASKS = 4000
OUTAGE = 2 * WorkerSettings().commit_interval
"""The broker stays down this long, so the worker tries to commit while it is gone."""
TASK_SECONDS = 0.01
"""With 2 threads, 200 tasks/s: the rest of the backlog outlasts the outage even though the
worker keeps running fetched tasks while the broker is down (librdkafka may have fetched
them all)."""


@pytest.mark.long
@pytest.mark.timeout(180)
def test_broker_restart_mid_run_loses_no_task(kafka, unique: str, tmp_path: Path) -> None:
    if kafka.local is None:
        pytest.skip("the broker is external (STREAMTASK_BOOTSTRAP or a container): "
                    "this test must stop and start it")
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=TASK_SECONDS) as run:
        run.send(TASKS)
        worker = run.start_worker("--concurrency", "2")  # slow enough to outlast the outage
        run.wait_for_executions(500, timeout=60, watch=[worker])
        try:
            kafka.local.down()
            wait_until(lambda: "Connection refused" in worker.output(), 30,
                       "the worker notices the broker is gone", worker.describe)
            time.sleep(OUTAGE)
            assert worker.running(), worker.describe()
            kafka.local.up(timeout=120)
        finally:
            kafka.local.up(timeout=120)  # returns at once when it runs: never leave it down
        assert missing(run.executions(), TASKS), "the restart came after the last task"

        run.wait_until_all_ran(TASKS, timeout=90, watch=[worker])
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.describe()
        executions = run.executions()
        assert not missing(executions, TASKS), summary(executions, TASKS)
