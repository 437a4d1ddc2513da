"""A consumer stuck while the broker answers is closed and re-created, so the worker never
stays alive but idle: one out of its group, and one back in its group, its partitions
assigned, that fetches nothing while records wait.

librdkafka was seen in both states after broker restarts (beside other load): a worker's
input consumer never rejoining its group (its JoinGroup request sat in the coordinator's
out-queue and timed out every minute), and a worker that got its partitions back and took
nothing more for minutes while its loop polled. No test can make librdkafka do either on
demand, so these put a real consumer into the same state behind the worker's back, once the
worker has run tasks: it leaves the group (``unsubscribe``) and will not ask to come back,
or its partitions are paused (librdkafka then fetches nothing) while the worker believes
them flowing. Tasks sent after that run only if the worker notices and re-creates the
consumer; without :mod:`streamtask.worker.liveness` it would poll the stranded consumer for
ever and run nothing more.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from streamtask import App, Task, Worker, WorkerSettings
from streamtask.config import KafkaSettings
from streamtask.events import Event
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure
from tests.helpers import wait_until

FIRST, SECOND = 100, 100


class RecordingTransport(kafka.KafkaTransport):
    """The real transport, keeping every consumer it opened (so the test can strand one)."""

    def __init__(self) -> None:
        self.opened: list[Any] = []

    def consumer(self, settings: KafkaSettings, group: str,  # type: ignore[override]
                 **overrides: Any) -> Any:
        opened = kafka.consumer(settings, group, **overrides)
        self.opened.append(opened)
        return opened


def leave_the_group(consumer: Any) -> None:
    consumer.unsubscribe()


def stop_fetching(consumer: Any) -> None:
    consumer.pause(consumer.assignment())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("strand", [leave_the_group, stop_fetching])
def test_a_stranded_consumer_is_recreated(kafka, strand: Callable[[Any], None]) -> None:
    app = App(f"stuck-{uuid.uuid4().hex[:8]}", kafka=kafka.settings)
    transport = RecordingTransport()
    app.transport = transport
    ran: set[int] = set()
    lock = threading.Lock()

    @app.stage("work", partitions=2)
    def work(task: Task) -> None:
        with lock:
            ran.add(task.payload["n"])

    ensure(app)
    with app.producer() as producer:
        producer.send_many("work", ({"n": n} for n in range(FIRST)))
    worker = Worker(app, settings=WorkerSettings(concurrency=2, rejoin_timeout=3.0))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_until(lambda: len(ran) == FIRST, 90, "the first tasks ran")
        stranded, opened = transport.opened[0], len(transport.opened)  # [0]: the inputs'
        strand(stranded)
        with app.producer() as producer:
            producer.send_many("work", ({"n": n} for n in range(FIRST, FIRST + SECOND)))
        wait_until(lambda: len(ran) == FIRST + SECOND, 90, "the tasks sent afterwards ran",
                   lambda: f"{len(ran)} ran; events {dict(worker.counter.counts)}")
        assert worker.counter.counts[Event.CONSUMER_RECREATED] == 1
        assert len(transport.opened) == opened + 1  # the stranded one's replacement
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
