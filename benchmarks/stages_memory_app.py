"""An 8-task Conductor-shaped chain for ``benchmarks.stages_memory``: ``step1 -> ... ->
step8``, each a small handler; ``step8`` appends one line per task to ``STAGES_MEMORY_LOG``
so the benchmark knows when every task went through the chain."""

from __future__ import annotations

import os

from streamtask import App, KafkaSettings, Task

STEPS = 8
LOG = os.environ.get("STAGES_MEMORY_LOG", "/tmp/streamtask-stages-memory.log")

def build(name: str, bootstrap: str) -> App:
    app = App(name, kafka=KafkaSettings(bootstrap))
    for index in range(1, STEPS + 1):
        _step(app, index)
    return app


def _step(app: App, index: int) -> None:
    def run(task: Task) -> dict[str, int] | None:
        if index < STEPS:
            return {"n": task.payload["n"], "step": index}
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{task.payload['n']}\n".encode())
        finally:
            os.close(fd)
        return None

    app.stage(f"step{index}", partitions=6,
              then=f"step{index + 1}" if index < STEPS else None)(run)


app = build(os.environ.get("STAGES_MEMORY_APP", "stagesmem"),
            os.environ.get("STREAMTASK_BOOTSTRAP", "127.0.0.1:9092"))
