"""The broker restarts, for longer than a session timeout, while the retry consumer holds
every task's retry in memory (early, not due yet): the retries still run once due.

Losing the retry partitions drops the held records (uncommitted: they come again), and the
partitions were paused to hold them; a worker that kept them paused after getting them back,
or whose retry consumer never rejoined, would stay alive with every retry pending for good.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from streamtask.config import WorkerSettings
from tests.helpers import recorder_run, summary, wait_until

pytestmark = [pytest.mark.serial, pytest.mark.soak]  # 52 s, broker down: `make soak`

TASKS = 200
DELAY = 40
"""The retry delay: still early when the broker is back (the asserts below fail, not pass,
if the machine makes the outage longer)."""
OUTAGE = WorkerSettings().session_timeout_ms / 1000 + 3
"""Longer than a session timeout: the worker loses its partitions."""


@pytest.mark.timeout(240)
def test_retries_held_across_a_broker_restart_still_run(
        kafka, unique: str, tmp_path: Path) -> None:
    if kafka.local is None:
        pytest.skip("the broker is external: this test must stop and start it")
    with recorder_run(kafka.bootstrap, unique, tmp_path, partitions=2, fail_every=1) as run:
        run.env["RECORDER_RETRY_DELAY"] = str(DELAY)
        run.send(TASKS)
        worker = run.start_worker("--create-topics", "--concurrency", "4", "--log-level", "DEBUG")
        wait_until(lambda: worker.output().count("task.deferred") >= TASKS, 60,
                   "the retry consumer holds every task's retry", worker.describe, interval=0.2)
        start = time.monotonic()
        stopped = len(worker.output())
        try:
            kafka.local.down()
            wait_until(lambda: "Connection refused" in worker.output()[stopped:], 30,
                       "the worker notices the broker is gone", worker.describe)
            time.sleep(OUTAGE)
        finally:
            kafka.local.up(timeout=120)
        wait_until(lambda: "partitions.lost" in worker.output()[stopped:], 30,
                   "the worker lost its partitions", worker.describe)
        assert not run.executions(), "retries ran before the restart: make DELAY longer"
        assert time.monotonic() - start < DELAY, "the retries came due before the restart ended"
        run.wait_until_all_ran(TASKS, timeout=DELAY + 90, watch=[worker])
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.describe()
        executions = run.executions()
        assert len({e.n for e in executions}) == TASKS, summary(executions, TASKS)
