"""The stage the capacity benchmark runs: ``work`` sleeps ``CAPACITY_SLEEP_MS`` (0: no-op).

Named by ``CAPACITY_APP``, with ``CAPACITY_PARTITIONS`` partitions; its Kafka settings come
from the deployment (``STREAMTASK_BOOTSTRAP``), as a real worker's do."""

from __future__ import annotations

import os
import time

from streamtask import App, Task

SLEEP = float(os.environ.get("CAPACITY_SLEEP_MS", "0")) / 1000
app = App(os.environ.get("CAPACITY_APP", "capacity"))


@app.stage("work", partitions=int(os.environ.get("CAPACITY_PARTITIONS", "8")))
def work(task: Task) -> None:
    if SLEEP:
        time.sleep(SLEEP)
