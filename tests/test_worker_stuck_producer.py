"""A producer that acknowledges nothing while the broker answers does not leave the worker
alive but idle: once every task it holds has only waited for acknowledgements for the bound,
the worker re-creates its clients and the tasks run again (at least once).

Seen after broker restarts beside other load: partitions assigned again, the loop polling,
the worker full of tasks whose results were never acknowledged, for minutes (until the
records' own five-minute timeout would fail the worker). No test can make librdkafka stop
acknowledging on demand, so the worker's first producer here is a real one that holds every
record for 15 minutes before sending it (``linger.ms``): it takes records and acknowledges
none. Without :class:`streamtask.worker.liveness.DeliveryWatch` no result would be written.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from streamtask import App, Task, Worker, WorkerSettings
from streamtask.config import KafkaSettings
from streamtask.events import Event
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure
from tests.helpers import wait_until
from tests.topic_reader import read_to_end

TASKS = 100


class SilentFirstProducer(kafka.KafkaTransport):
    """The real transport, whose first producer lingers 15 minutes over every record."""

    def __init__(self) -> None:
        self.producers = 0

    def producer(self, settings: KafkaSettings, **overrides: Any) -> Any:  # type: ignore[override]
        self.producers += 1
        if self.producers == 1:
            overrides = {**overrides, "linger.ms": 900_000, "message.timeout.ms": 1_000_000}
        return kafka.producer(settings, **overrides)


@pytest.mark.timeout(180)
def test_a_producer_that_acknowledges_nothing_is_recreated(kafka) -> None:
    app = App(f"silent-{uuid.uuid4().hex[:8]}", kafka=kafka.settings)
    ran: set[int] = set()
    lock = threading.Lock()

    @app.stage("work", partitions=2, then="done")
    def work(task: Task) -> dict[str, int]:
        with lock:
            ran.add(task.payload["n"])
        return {"n": task.payload["n"]}

    @app.stage("done", partitions=2)
    def done(task: Task) -> None:
        """Not run: its topic receives the results of ``work``."""

    ensure(app)
    with app.producer() as producer:
        producer.send_many("work", ({"n": n} for n in range(TASKS)))
    app.transport = SilentFirstProducer()
    worker = Worker(app, ["work"], WorkerSettings(concurrency=2, rejoin_timeout=3.0))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_until(lambda: len(ran) == TASKS, 90, "the tasks ran")

        def results() -> set[int]:
            return {app.codec.decode(m.value()).payload["n"]
                    for m in read_to_end(kafka.bootstrap, f"{app.name}.done")}

        wait_until(lambda: results() == set(range(TASKS)), 90, "every result is written",
                   lambda: f"{len(results())} results; events {dict(worker.counter.counts)}")
        assert worker.counter.counts[Event.CLIENTS_RECREATED] >= 1
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
