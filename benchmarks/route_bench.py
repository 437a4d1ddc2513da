"""Per-task CPU of the worker's route-and-deliver path for a plain ``then=`` chain (no Kafka).

One step is what the worker's loop does for a task of the ``peers`` scenario's no-op stage
once its handler returned: route the outcome (build the child of ``then=`` and encode it,
report ``task.succeeded``), produce the child, serve its acknowledgement and finish the job
(the offset becomes committable). The producer is a stand-in that acknowledges each record
at the next ``poll``, so what is timed is the worker's own interpreter time on that path,
librdkafka's left out. Decoding the received record is not timed (``codec_bench.py`` does).
Times are the process's CPU time, µs per task, the median of ``--rounds`` rounds.

``--tree DIR`` runs it against the streamtask package in DIR (an exported older commit:
``git archive COMMIT streamtask schemas | tar -x -C DIR``), to compare two versions: run
both in alternation, several times, on a shared box::

    python benchmarks/route_bench.py [--rounds 9] [--tasks 20000] [--tree DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

BATCH = 64
"""Executions ended per loop pass (the scheduler hands them over in batches)."""


class Producer:
    """Stands in for librdkafka's producer: accepts every record, acknowledges it at poll."""

    def __init__(self) -> None:
        self.pending: list[Callable[[Any, Any], None]] = []

    def produce(self, *_args: Any, on_delivery: Callable[[Any, Any], None],
                **_kwargs: Any) -> None:
        self.pending.append(on_delivery)

    def poll(self, _timeout: float = 0.0) -> int:
        pending, self.pending = self.pending, []
        for acknowledged in pending:
            acknowledged(None, None)
        return len(pending)

    def flush(self, _timeout: float = 0.0) -> int:
        return self.poll()


class Ended:
    """Stands in for the scheduler: hands over one batch of ended executions."""

    def __init__(self) -> None:
        self.batch: list[tuple[Any, Any, BaseException | None, float]] = []

    def ended(self, _wait: float = 0.0) -> list[tuple[Any, Any, BaseException | None, float]]:
        batch, self.batch = self.batch, []
        return batch


def one_round(tasks: int) -> float:
    """CPU µs per task over ``tasks`` tasks routed, produced, acknowledged and finished."""
    from streamtask.dev import bench, bench_peers
    from streamtask.model.envelope import Task
    from streamtask.worker import Worker
    from streamtask.worker.delivery import open_delivery
    from streamtask.worker.job import Job
    from streamtask.worker.offsets import PartitionOffsets

    app = bench_peers.peers_app("route-bench", "127.0.0.1:9")
    worker = Worker(app, [bench.WORK])
    stage = app.get_stage(bench.WORK)
    producer, ended = Producer(), Ended()
    worker._scheduler = ended  # type: ignore[assignment]
    worker._delivery = open_delivery(producer, worker.kafka, worker.events, worker._finish,
                                     worker._partitions, exactly_once=False)
    tp = (stage.topic, 0)
    partition = worker._partitions[tp] = PartitionOffsets()
    headers = {"tenant": "acme", "source": "bench", "trace": "000000000001"}
    task = Task.new(bench.WORK, {"data": os.urandom(100)}, key="k", headers=headers)
    jobs = []
    for offset in range(tasks):
        partition.received(offset)
        jobs.append(Job(tp, offset, "k", task, stage, partition, None))
    worker._live.update(jobs)
    start = time.process_time()
    for at in range(0, tasks, BATCH):
        ended.batch = [(job, task.payload, None, 0.001) for job in jobs[at:at + BATCH]]
        worker._route_ended()
        worker._delivery.serve(0)
    seconds = time.process_time() - start
    assert partition.position == tasks and not worker._live, "every task must finish"
    return seconds / tasks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--tree", help="run the streamtask package found in this directory")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, os.path.abspath(args.tree))
    times = [one_round(args.tasks) for _ in range(args.rounds)]
    print(f"route+deliver: {statistics.median(times):.2f} µs/task CPU (median of "
          f"{args.rounds}; min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
