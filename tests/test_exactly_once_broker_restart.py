"""The broker restarts, for longer than a session timeout, under an exactly-once worker: the
worker never stays alive but idle. Its transaction cannot commit while the broker is gone, so
it either carries on once the broker is back, or stops with one line (no traceback) for its
supervisor to restart it; either way each result is committed exactly once in the end.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import confluent_kafka
import pytest

from streamtask.config import WorkerSettings
from streamtask.kafka.topics import ensure
from tests.apps.eos_app import build
from tests.helpers import WorkerProcess, wait_until
from tests.topic_reader import read_to_end

pytestmark = pytest.mark.serial  # takes its broker down: run alone (`make test`)

TASKS = 8000
OUTAGE = WorkerSettings().session_timeout_ms / 1000 + 3
"""Longer than a session timeout: the worker loses its partitions too."""
RESTARTS = 3
"""A supervisor's restarts allowed after the outage: each one is a stop on a transaction error."""


class Results:
    """A read_committed reader of the stage's output that counts the task numbers seen."""

    def __init__(self, bootstrap: str, topic: str, decode: object) -> None:
        self.consumer = confluent_kafka.Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"{topic}-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed"})
        self.consumer.subscribe([topic])
        self.decode = decode
        self.seen: set[int] = set()

    def count(self) -> int:
        for message in self.consumer.consume(1000, 0.5):
            if message.error() is None:
                self.seen.add(self.decode(message.value()).payload["n"])  # type: ignore[operator]
        return len(self.seen)


@pytest.mark.timeout(300)
def test_exactly_once_worker_survives_or_stops_cleanly_on_a_broker_restart(
        kafka, unique: str, tmp_path: Path) -> None:
    if kafka.local is None:
        pytest.skip("the broker is external: this test must stop and start it")
    name = f"t{unique}"
    app = build(name, kafka.bootstrap)
    ensure(app)
    with app.producer() as producer:
        producer.send_many("double", [{"n": n} for n in range(TASKS)])
    env = {**os.environ, "EOS_APP": name, "STREAMTASK_BOOTSTRAP": kafka.bootstrap}
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        workers.append(WorkerProcess(
            [sys.executable, "-m", "streamtask", "worker", "tests.apps.eos_app:app",
             "--stage", "double", "--instance-id", "double", "--concurrency", "2",
             "--commit-interval", "0.3"], env, tmp_path / f"worker-{len(workers)}.out"))
        return workers[-1]

    results = Results(kafka.bootstrap, f"{name}.add_one", app.codec.decode)
    try:
        worker = start()
        wait_until(lambda: results.count() >= 300, 90, "results are committed",
                   worker.describe)
        # Not waiting for the worker to log the outage: a worker stuck in a transactional
        # call serves no librdkafka log line until it returns.
        try:
            kafka.local.down()
            time.sleep(OUTAGE)
        finally:
            kafka.local.up(timeout=120)
        assert results.count() < TASKS, "the pipeline finished before the outage"

        def finished_or_restarted() -> bool:
            worker = workers[-1]
            if not worker.running():
                assert worker.wait(1) == 1, worker.describe()
                output = worker.output()
                assert "Traceback" not in output, worker.describe()
                assert "error: transaction failed" in output, worker.describe()
                assert len(workers) <= RESTARTS, "restarted again and again"
                start()
            return results.count() >= TASKS

        wait_until(finished_or_restarted, 150, "every task's result is committed",
                   lambda: f"{len(results.seen)} of {TASKS}\n{workers[-1].describe()}")
    finally:
        results.consumer.close()
        for worker in workers:
            worker.kill_group()
    seen = [app.codec.decode(m.value()).payload["n"]
            for m in read_to_end(kafka.bootstrap, f"{name}.add_one")]
    assert sorted(seen) == list(range(TASKS)), (
        f"{len(seen)} results for {TASKS} tasks, {len(set(seen))} distinct")

