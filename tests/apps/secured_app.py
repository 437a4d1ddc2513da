"""A test app for the secured-cluster tests; its settings come from the deployment.

``app`` is built with no ``kafka=`` argument, so a ``streamtask worker`` subprocess and this
module's ``app.send`` both connect as the ``STREAMTASK_*`` variables say (user, password
file, ...), which is what these tests check. The environment also names the app (unique per
test), its execution log and its partition count. Task ``n`` fails for good when
``n % 10 == 3`` (dead-lettered) and fails its first attempt when ``n % 10 == 5`` (retried);
each execution appends ``<n> <attempt>`` to the log with one O_APPEND write.
"""

from __future__ import annotations

import os

from streamtask import App, KafkaSettings, Task
from streamtask.retry import Backoff, RetryPolicy

LOG = os.environ.get("SECURED_LOG", "/tmp/streamtask-secured.log")
RETRY = RetryPolicy(max_attempts=2, backoff=Backoff.FIXED, delay=1.0)


def build(name: str, kafka: KafkaSettings | None = None, partitions: int = 2) -> App:
    """The app named ``name``; ``kafka=None`` takes the deployment's settings."""
    app = App(name, kafka=kafka)

    @app.stage("work", partitions=partitions, retry=RETRY)
    def work(task: Task) -> None:
        n = task.payload["n"]
        record(n, task.attempt)
        if n % 10 == 3:
            raise ValueError(f"task {n} always fails")
        if n % 10 == 5 and task.attempt == 1:
            raise ConnectionError(f"first attempt of task {n} fails")

    return app


def record(n: int, attempt: int) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{n} {attempt}\n".encode())
    finally:
        os.close(fd)


def executions(log: str) -> list[tuple[int, int]]:
    """Every (n, attempt) recorded so far (a partial last line is skipped)."""
    try:
        with open(log) as lines:
            return [(int(a), int(b)) for a, b in
                    (line.split() for line in lines if line.endswith("\n"))]
    except FileNotFoundError:
        return []


app = build(os.environ.get("SECURED_APP", "secured"),
            partitions=int(os.environ.get("SECURED_PARTITIONS", "2")))
