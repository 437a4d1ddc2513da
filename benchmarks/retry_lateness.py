"""How late do retried tasks run against their due time, on an idle worker?

Sends N tasks that each fail their first attempt with a fixed 1 s back-off, spread over a
few seconds, and records for every retry (attempt 2) the start time minus its due time
(``task.not_before``). Issue requirement: never early, p99 within 100 ms.

    python benchmarks/retry_lateness.py -b 127.0.0.1:9092 [--tasks 300]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
import uuid

from streamtask import App, KafkaSettings, Task, Worker, WorkerSettings
from streamtask.kafka.topics import ensure
from streamtask.retry import Backoff, RetryPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--spread", type=float, default=5.0, help="seconds to send over")
    args = parser.parse_args()
    logging.getLogger("streamtask").setLevel(logging.CRITICAL)  # the failures are on purpose

    app = App(f"lateness-{uuid.uuid4().hex[:6]}", kafka=KafkaSettings(args.bootstrap))
    lateness_ms: list[float] = []

    @app.stage("flaky", partitions=4,
               retry=RetryPolicy(max_attempts=2, backoff=Backoff.FIXED, delay=1.0))
    def flaky(task: Task) -> None:
        if task.attempt == 1:
            raise ConnectionError("first attempt fails")
        assert task.not_before is not None
        lateness_ms.append(time.time() * 1000 - task.not_before)

    ensure(app)
    worker = Worker(app, settings=WorkerSettings(concurrency=8))
    thread = threading.Thread(target=worker.run, kwargs={"max_tasks": 2 * args.tasks})
    thread.start()
    time.sleep(3)  # let the worker join before the clock matters
    with app.producer() as producer:
        for n in range(args.tasks):
            producer.send("flaky", {"n": n})
            producer.flush()
            time.sleep(args.spread / args.tasks)
    thread.join(120)
    cuts = statistics.quantiles(lateness_ms, n=100)
    print(f"{len(lateness_ms)} retries: lateness min {min(lateness_ms):.1f} ms, "
          f"p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms, max {max(lateness_ms):.1f} ms; "
          f"early: {sum(1 for x in lateness_ms if x < 0)}")


if __name__ == "__main__":
    main()
