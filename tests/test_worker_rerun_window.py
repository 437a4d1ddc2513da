"""One slow task freezes its partition's commit position while the tasks behind it finish;
a ``kill -9`` then reruns every finished task above the position. The worker counts those as
held and stops taking records at ``max_buffered``, so the reruns stay within the README's
bound: ``max_buffered`` (concurrency + prefetch) plus the tasks finished since the last
commit (``commit_every``)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from streamtask.config import WorkerSettings
from tests.helpers import RecorderRun, duplicates, missing, recorder_run, summary

CONCURRENCY = 2
SETTINGS = WorkerSettings(concurrency=CONCURRENCY)
BOUND = SETTINGS.max_buffered + SETTINGS.commit_every
TASKS = 2 * BOUND
"""Twice the bound: without the window, all but the slow task would run before the kill."""


@pytest.mark.timeout(240)
def test_a_slow_task_does_not_widen_the_rerun_window(kafka, unique: str, tmp_path: Path) -> None:
    with recorder_run(kafka.bootstrap, unique, tmp_path, partitions=1) as run:
        run.send(TASKS)
        run.env["RECORDER_SLOW"] = "0:600"  # the first task of the only partition never ends
        first = run.start_worker("--concurrency", str(CONCURRENCY))
        run.wait_for_executions(SETTINGS.max_buffered // 2 - CONCURRENCY, timeout=90,
                                watch=[first])
        ran = _settled(run, quiet=2.0, timeout=90)  # it took as much as it will
        first.kill9()

        del run.env["RECORDER_SLOW"]
        second = run.start_worker("--concurrency", "8")
        run.wait_for_commit_beyond(TASKS - 1, timeout=180, watch=[second])  # all of it reran
        second.signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, second.describe()
        executions = run.executions()
        assert not missing(executions, TASKS), summary(executions, TASKS)
        assert duplicates(executions) <= BOUND, (
            f"{ran} ran before the kill; {duplicates(executions)} reruns > max_buffered "
            f"{SETTINGS.max_buffered} + commit_every {SETTINGS.commit_every}")


def _settled(run: RecorderRun, quiet: float, timeout: float) -> int:
    """Wait until the log has not grown for ``quiet`` seconds; return its length.

    A worker that honours the window stops at ``max_buffered``; one that does not goes on
    until it ran the whole backlog, whose reruns then exceed the bound.
    """
    deadline = time.monotonic() + timeout
    count, since = len(run.executions()), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"the log still grows after {timeout:.0f}s"
        time.sleep(0.1)
        now = len(run.executions())
        if now != count:
            count, since = now, time.monotonic()
    return count
