"""CPU per task of the observability subscribers, measured in process (no broker noise).

A worker emits one event per finished task (``task.succeeded`` in a no-op drain). This
times what each subscriber adds per such event: the Prometheus counter/histogram update,
and the execution trail's buffering plus its share of a flush (Avro encode + produce of one
record per run; in a no-op drain every task is its own run). Compare with the worker's CPU
per task from ``streamtask bench`` to get the fraction.

    python -m benchmarks.observe_cost --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from streamtask import App, KafkaSettings
from streamtask.events import Event
from streamtask.model.envelope import new_task_id
from streamtask.ops.metrics import WorkerMetrics
from streamtask.ops.trail import TrailWriter


def per_call_us(run: Callable[[int], None], n: int, repeats: int = 5) -> float:
    """Best of ``repeats`` runs of ``run(n)``, in µs of CPU per item."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        run(n)
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def events(n: int) -> list[dict[str, Any]]:
    return [{"task_id": new_task_id(), "stage": "work", "children": 1, "seconds": 0.00002,
             "attempt": 1, "run_id": new_task_id(), "parent_id": None} for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--tasks", type=int, default=50_000)
    args = parser.parse_args()
    app = App(f"observe-cost-{new_task_id()[-6:]}", kafka=KafkaSettings(args.bootstrap))
    app.stage("work")(lambda task: None)
    batch = events(args.tasks)
    metrics = WorkerMetrics(app.name, app.stages.values())
    writer = TrailWriter(app, "bench", flush_interval=0.2)

    def count(n: int) -> None:
        for fields in batch[:n]:
            metrics(Event.TASK_SUCCEEDED, fields)

    def trail(n: int) -> None:
        for fields in batch[:n]:
            writer(Event.TASK_SUCCEEDED, fields)
        writer.flush(final=True)

    print(f"metrics subscriber: {per_call_us(count, args.tasks):.2f} µs CPU per task")
    print(f"execution trail:    {per_call_us(trail, args.tasks):.2f} µs CPU per task "
          "(buffer, Avro encode, produce, flush)")


if __name__ == "__main__":
    main()
