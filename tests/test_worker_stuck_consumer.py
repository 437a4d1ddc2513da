"""A consumer that stays out of its group while the broker answers is closed and re-created,
so the worker never stays alive but idle.

librdkafka was seen (after the third of three broker restarts, beside other load) to leave a
worker's input consumer out of its group for good: its JoinGroup request sat in the
coordinator's out-queue and timed out every minute. No test can make librdkafka do that on
demand, so this one puts a real consumer into the same state behind the worker's back: once
the worker has run tasks, its input consumer leaves the group (``unsubscribe``) and will not
ask to come back, while the broker stays up. Tasks sent after that run only if the worker
notices and re-creates the consumer; without :mod:`streamtask.worker.liveness` it would poll
the stranded consumer for ever and run nothing more.
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


@pytest.mark.timeout(180)
def test_a_consumer_stranded_out_of_its_group_is_recreated(kafka) -> None:
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
        stranded.unsubscribe()  # out of the group, and librdkafka will not rejoin it
        wait_until(lambda: stranded.memberid() is None, 30, "the consumer left its group")
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
