"""A retry partition paused at the hold limit, then lost and assigned again, is fetched again:
its retries run once due.

The worker holds a retry level's early records in memory and pauses the partition once it
holds ``HeldRecords.limit`` of them. Losing the partition drops the held records (they are
uncommitted and come again) but librdkafka keeps the partition's pause flag, so when it is
assigned again nothing would ever be fetched from it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from streamtask.config import WorkerSettings
from streamtask.worker.delays import HeldRecords
from tests.helpers import recorder_run, summary, wait_until

TASKS = HeldRecords().limit + 100
"""One partition: every task's retry lands in one retry partition, past the hold limit."""
DELAY = 30
"""The retry delay: the retries are still early when the partition comes back (the stop
takes ``STOPPED``, 14 s; the asserts below fail, not pass, if the machine makes it later)."""
STOPPED = WorkerSettings().session_timeout_ms / 1000 + 4
"""A SIGSTOPped worker misses heartbeats this long: the group drops it (partitions lost)."""


@pytest.mark.timeout(240)
def test_retry_partition_paused_at_the_hold_limit_resumes_after_a_loss(
        kafka, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, partitions=1, fail_every=1) as run:
        run.env["RECORDER_RETRY_DELAY"] = str(DELAY)
        run.send(TASKS)
        worker = run.start_worker("--create-topics", "--concurrency", "4", "--log-level", "DEBUG")
        wait_until(lambda: worker.output().count("task.deferred") >= HeldRecords().limit, 60,
                   "the worker holds a full retry partition", worker.describe, interval=0.2)
        start = time.monotonic()
        worker.signal(signal.SIGSTOP)
        try:
            time.sleep(STOPPED)
        finally:
            worker.signal(signal.SIGCONT)
        wait_until(lambda: "partitions.lost" in worker.output(), 30,
                   "the worker notices it lost its partitions", worker.describe)
        assert not run.executions(), "retries ran before the loss: make DELAY longer"
        assert time.monotonic() - start < DELAY, "the retries came due before the loss"
        run.wait_until_all_ran(TASKS, timeout=DELAY + 90, watch=[worker])
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.describe()
        executions = run.executions()
        assert len({e.n for e in executions}) == TASKS, summary(executions, TASKS)
