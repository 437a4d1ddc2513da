"""The broker goes down in the middle of a rebalance (a second worker joining a busy one) for
longer than a session timeout, and comes back: both workers take part again and every task
runs. A worker whose group join died with the broker would stay alive and idle.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from streamtask.config import WorkerSettings
from tests.helpers import missing, recorder_run, summary, wait_until

pytestmark = [pytest.mark.serial, pytest.mark.soak]  # 90 s, broker down: `make soak`

TASKS = 6000
OUTAGE = WorkerSettings().session_timeout_ms / 1000 + 3
"""Longer than a session timeout: both workers lose whatever they held."""


@pytest.mark.timeout(240)
def test_a_broker_restart_mid_rebalance_leaves_no_worker_idle(
        kafka, unique: str, tmp_path: Path) -> None:
    if kafka.local is None:
        pytest.skip("the broker is external: this test must stop and start it")
    with recorder_run(kafka.bootstrap, unique, tmp_path, sleep=0.01) as run:
        run.send(TASKS)
        first = run.start_worker("--concurrency", "2")
        run.wait_for_executions(200, timeout=60, watch=[first])
        second = run.start_worker("--concurrency", "2")
        wait_until(lambda: "partitions.revoked" in first.output(), 60,
                   "the second worker's join starts a rebalance", run.describe_workers)
        stopped = [len(first.output()), len(second.output())]
        try:
            kafka.local.down()
            wait_until(lambda: all("Connection refused" in w.output()[at:]
                                   for w, at in zip((first, second), stopped, strict=True)),
                       30, "both workers notice the broker is gone", run.describe_workers)
            time.sleep(OUTAGE)
        finally:
            kafka.local.up(timeout=120)
        before = len(run.executions())
        assert missing(run.executions(), TASKS), "the backlog ran out before the restart"
        run.wait_until_all_ran(TASKS, timeout=150, watch=[first, second])
        after = {e.pid for e in run.executions()[before:]}
        assert after == {first.pid, second.pid}, (
            f"after the restart only {after} ran tasks\n{run.describe_workers()}")
        for worker in (first, second):
            worker.signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0, worker.describe()
        executions = run.executions()
        assert not missing(executions, TASKS), summary(executions, TASKS)
