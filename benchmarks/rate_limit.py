"""Does a stage's rate limit hold across 1, 2 and 3 workers?

For each worker count: a stage of 6 partitions with ``rate_limit=RateLimit(LIMIT)``, a
backlog larger than the limit can drain in the run (so the limit, not the input, sets the
pace), N workers in threads of this process (each its own consumer in the group). Once every
partition is held (the shares add up to the whole limit) and a settling second has passed,
it counts the task starts in a window and reports the achieved rate against the limit.
The backlog left at the end is printed: a run that drained it measured its input, not the
limit, and is reported as such.

    python -m benchmarks.rate_limit [-b HOST:PORT] [--limit 50] [--window 60]

Without ``-b`` it starts a throwaway local broker on free ports (``make bench-rate-limit``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from streamtask import App, KafkaSettings, Task, Worker, WorkerSettings
from streamtask.dev.broker import LocalBroker, free_port
from streamtask.kafka.topics import ensure
from streamtask.worker.ratelimit import RateLimit

PARTITIONS = 6


@dataclass(frozen=True)
class Measured:
    workers: int
    limit: float
    window: float
    started: int
    backlog_left: int
    most_held: int
    """The most tasks one worker held at once during the window (its flow-control bound)."""

    @property
    def rate(self) -> float:
        return self.started / self.window

    @property
    def error(self) -> float:
        """Relative distance from the limit (0.03 = 3 %)."""
        return abs(self.rate - self.limit) / self.limit

    def line(self) -> str:
        return (f"{self.workers} worker(s): {self.started} starts in {self.window:.0f} s = "
                f"{self.rate:.2f}/s against {self.limit:g}/s ({self.error:.1%} off); "
                f"backlog left {self.backlog_left}; at most {self.most_held} held by a worker")


def measure(kafka: KafkaSettings, workers: int, limit: float, window: float,
            settings: WorkerSettings | None = None, settle_timeout: float = 90.0) -> Measured:
    """Run ``workers`` workers on a fresh rate-limited stage and count starts in ``window``
    (sampling how many tasks each worker holds meanwhile)."""
    app = App(f"rate-{uuid.uuid4().hex[:8]}", kafka=kafka)
    starts: list[float] = []
    lock = threading.Lock()

    @app.stage("limited", partitions=PARTITIONS, rate_limit=RateLimit(limit))
    def limited(task: Task) -> None:
        with lock:
            starts.append(time.monotonic())

    ensure(app)
    stage = app.get_stage("limited")
    topics = {stage.topic, *stage.retry_topics}
    backlog = int(limit * (window + settle_timeout) * 1.2) + 100
    with app.producer() as producer:
        for n in range(backlog):
            producer.send("limited", {"n": n}, key=str(n))
        producer.flush(60)
    running = [Worker(app, settings=settings or WorkerSettings(concurrency=4))
               for _ in range(workers)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in running]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + settle_timeout
        while not _settled(running, topics) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _settled(running, topics):
            raise RuntimeError(f"{workers} workers did not share the {PARTITIONS} partitions "
                               f"within {settle_timeout:.0f} s")
        time.sleep(1.0)
        begin = time.monotonic()
        most_held = 0
        while time.monotonic() < begin + window:
            most_held = max(most_held, *(w.held for w in running))
            time.sleep(0.05)
        end = time.monotonic()
        settled_throughout = _settled(running, topics)
    finally:
        for worker in running:
            worker.stop()
        for thread in threads:
            thread.join(60)
    if not settled_throughout:
        raise RuntimeError("the group rebalanced during the window")
    with lock:
        counted = sum(1 for t in starts if begin <= t < end)
        left = backlog - len(starts)
    return Measured(workers, limit, end - begin, counted, left, most_held)


def _settled(workers: list[Worker], topics: set[str]) -> bool:
    """Every partition of the stage's topics (input and retry levels) held by exactly one
    worker, each worker holding some input partition. Read from the workers' assignments,
    not from their shares, so that a wrong share cannot hide."""
    held = [[tp for tp in w._partitions if tp[0] in topics] for w in workers]
    flat = [tp for tps in held for tp in tps]
    inputs = [[tp for tp in tps if not tp[0].count(".retry.")] for tps in held]
    return all(inputs) and len(flat) == len(set(flat)) == PARTITIONS * len(topics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bootstrap", default=None)
    parser.add_argument("--limit", type=float, default=50.0, help="tasks per second")
    parser.add_argument("--window", type=float, default=60.0, help="seconds to count over")
    parser.add_argument("--workers", default="1,2,3")
    args = parser.parse_args()
    logging.getLogger("streamtask").setLevel(logging.ERROR)
    broker = None
    if args.bootstrap is None:
        data_dir = Path(tempfile.mkdtemp(prefix="streamtask-rate-broker-"))
        broker = LocalBroker(data_dir, port=free_port(), controller_port=free_port())
        broker.up(timeout=120)
    try:
        kafka = KafkaSettings(broker.bootstrap if broker is not None else args.bootstrap)
        for count in (int(n) for n in args.workers.split(",")):
            print(measure(kafka, count, args.limit, args.window).line(), flush=True)
    finally:
        if broker is not None:
            broker.down()
            shutil.rmtree(broker.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
