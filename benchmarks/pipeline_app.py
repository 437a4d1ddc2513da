"""The 3-stage pipeline the pipeline benchmark runs: parse -> enrich -> store, then ``done``.

``store`` appends ``<n> <sent_at> <finished_at>`` to ``PIPELINE_LOG`` for every task.
Named by ``PIPELINE_APP`` (one per run)."""

from __future__ import annotations

import os
import time
from typing import Any

from streamtask import App, KafkaSettings, Task

app = App(os.environ.get("PIPELINE_APP", "pipeline"),
          kafka=KafkaSettings(os.environ.get("STREAMTASK_BOOTSTRAP", "127.0.0.1:9092")))
LOG = os.environ.get("PIPELINE_LOG", "/tmp/pipeline.log")


@app.stage("parse", partitions=8, then="enrich")
def parse(task: Task) -> dict[str, Any]:
    return dict(task.payload)


@app.stage("enrich", partitions=8, then="store")
def enrich(task: Task) -> dict[str, Any]:
    return {**task.payload, "enriched": True}


@app.stage("store", partitions=8)
def store(task: Task) -> None:
    line = f"{task.payload['n']} {task.payload['sent_at']} {time.time() * 1000:.1f}\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
