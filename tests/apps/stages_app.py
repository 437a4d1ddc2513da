"""A test app of many stages for one worker process: a chain ``step1 -> ... -> stepN`` (each
step's result is the next step's task), plus ``fast`` and ``slow``, two unrelated stages.

Worker subprocesses import it as ``tests.apps.stages_app:app``; the environment names the app
(unique per test) and the log. Each execution appends ``<stage> <n> <pid>`` with a single
O_APPEND write, which survives ``kill -9``. ``slow`` waits until the file ``STAGES_GATE``
exists (the test opens the gate), so it holds its threads for as long as the test wants;
it logs ``slow.started`` as it begins.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from streamtask import App, KafkaSettings, Task

APP_NAME = os.environ.get("STAGES_APP", "stages")
LOG = os.environ.get("STAGES_LOG", "/tmp/streamtask-stages.log")
CHAIN = int(os.environ.get("STAGES_CHAIN", "3"))
SLEEP = float(os.environ.get("STAGES_SLEEP", "0"))
"""Seconds each chain step takes."""
GATE = Path(os.environ.get("STAGES_GATE", "/tmp/streamtask-stages.gate"))
GATE_WAIT = 120.0
"""The longest ``slow`` waits for its gate (a test that never opens it must not hang)."""
EXACTLY_ONCE = os.environ.get("STAGES_EXACTLY_ONCE", "")
"""Comma-separated chain steps that run exactly-once."""

app = App(APP_NAME, kafka=KafkaSettings(os.environ.get("STREAMTASK_BOOTSTRAP", "127.0.0.1:9092")))


def record(stage: str, n: int) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{stage} {n} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def _step(name: str) -> None:
    index = int(name.removeprefix("step"))
    last = index == CHAIN

    def run(task: Task) -> dict[str, int] | None:
        if SLEEP:
            time.sleep(SLEEP)
        record(name, task.payload["n"])
        return None if last else {"n": task.payload["n"]}

    app.stage(name, partitions=4, then=None if last else f"step{index + 1}",
              exactly_once=name in EXACTLY_ONCE.split(","))(run)


for _index in range(1, CHAIN + 1):
    _step(f"step{_index}")


@app.stage("fast", partitions=4)
def fast(task: Task) -> None:
    record("fast", task.payload["n"])


@app.stage("slow", partitions=4)
def slow(task: Task) -> None:
    record("slow.started", task.payload["n"])
    deadline = time.monotonic() + GATE_WAIT
    while not GATE.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    record("slow", task.payload["n"])
