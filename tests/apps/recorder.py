"""A test app whose one stage records every execution in a file.

Worker subprocesses import it as ``tests.apps.recorder:app``; the environment names the app
(unique per test), the log file and how long each task takes. Each execution appends one
line ``<n> <pid>`` with a single O_APPEND write, which survives ``kill -9`` of the worker.
"""

from __future__ import annotations

import os
import time

from streamtask import App, KafkaSettings, Task
from streamtask.retry import Backoff, RetryPolicy

APP_NAME = os.environ.get("RECORDER_APP", "recorder")
LOG = os.environ.get("RECORDER_LOG", "/tmp/streamtask-recorder.log")
SLEEP = float(os.environ.get("RECORDER_SLEEP", "0"))
PARTITIONS = int(os.environ.get("RECORDER_PARTITIONS", "8"))
FAIL_EVERY = int(os.environ.get("RECORDER_FAIL_EVERY", "0"))
"""When set, the first attempt of every task whose n is a multiple of it fails (then retries)."""
SLOW_N, _, SLOW_SECONDS = os.environ.get("RECORDER_SLOW", "-1:0").partition(":")
"""``n:seconds``: task ``n`` takes this long (one slow task among fast ones)."""
EMIT = os.environ.get("RECORDER_EMIT") == "1"
"""When set, each task also sends a result to the ``done`` stage, so finishing it needs the
broker's acknowledgement (run the worker with ``--stage work``)."""
RETRY = RetryPolicy(max_attempts=3, backoff=Backoff.FIXED,
                    delay=float(os.environ.get("RECORDER_RETRY_DELAY", "1")))

app = App(APP_NAME, kafka=KafkaSettings(os.environ.get("STREAMTASK_BOOTSTRAP", "127.0.0.1:9092")))


@app.stage("work", partitions=PARTITIONS, retry=RETRY, then="done" if EMIT else None)
def work(task: Task) -> dict[str, int] | None:
    if SLEEP:
        time.sleep(SLEEP)
    n = task.payload["n"]
    if n == int(SLOW_N):
        time.sleep(float(SLOW_SECONDS))
    if FAIL_EVERY and task.attempt == 1 and n % FAIL_EVERY == 0:
        raise ConnectionError(f"first attempt of task {n} fails")
    record(n)
    return {"n": n} if EMIT else None


if EMIT:
    @app.stage("done", partitions=PARTITIONS)
    def done(task: Task) -> None:
        """Not run by the tests: its topic only receives the results of ``work``."""


def record(n: int) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{n} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def executions(log: str) -> list[int]:
    """Every recorded execution, in order (a task id may appear more than once)."""
    try:
        with open(log) as lines:
            return [int(line.split()[0]) for line in lines if line.strip()]
    except FileNotFoundError:
        return []
