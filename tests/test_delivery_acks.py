"""The at-least-once delivery's acknowledgements, without Kafka: a job is durable only when
its last record is acknowledged, a failed one is latched and raised at serve with the job
never durable, and ``send_then`` sends the second record only after the first is."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from streamtask import App, DeliveryFailed, KafkaSettings, Task
from streamtask.events import EventBus
from streamtask.worker.delivery import AtLeastOnce
from streamtask.worker.job import Job, Outgoing
from streamtask.worker.offsets import PartitionOffsets

app = App("acks", kafka=KafkaSettings("127.0.0.1:9"))


@app.stage("work", partitions=1)
def work(task: Task) -> None:
    """Never run: only its jobs are built."""


STAGE = app.stages["work"]


class Producer:
    """Takes records; ``poll`` delivers the pending reports, failing those asked to."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.pending: list[tuple[str, Any]] = []
        self.failing: set[str] = set()

    def produce(self, topic: str, value: bytes | None, key: Any = None, **where: Any) -> None:
        self.sent.append(topic)
        self.pending.append((topic, where["on_delivery"]))

    def poll(self, _timeout: float = 0.0) -> int:
        pending, self.pending = self.pending, []
        for topic, acknowledged in pending:
            failed = KafkaError(KafkaError._MSG_TIMED_OUT) if topic in self.failing else None
            acknowledged(failed, None)
        return len(pending)


def delivery() -> tuple[AtLeastOnce, Producer, list[Job]]:
    producer, durable = Producer(), []
    return AtLeastOnce(producer, app.kafka, EventBus(), durable.append, {}), producer, durable


def job() -> Job:
    return Job((STAGE.topic, 0), 7, "k", Task.new("work", {}), STAGE, PartitionOffsets(), None)


def record(topic: str) -> Outgoing:
    return Outgoing(topic, b"v", "k", [])


def test_a_job_is_durable_once_its_last_record_is_acknowledged() -> None:
    acks, _producer, durable = delivery()
    sending = job()
    acks.send(sending, [record("a"), record("b")])
    assert sending.pending_acks == 2 and durable == []
    acks.serve(0)
    assert sending.pending_acks == 0 and durable == [sending]


def test_a_record_never_acknowledged_is_raised_and_its_job_never_durable() -> None:
    acks, producer, durable = delivery()
    producer.failing.add("b")
    sending = job()
    acks.send(sending, [record("a"), record("b")])
    with pytest.raises(DeliveryFailed, match="record to b was not acknowledged"):
        acks.serve(0)
    assert durable == [] and sending.pending_acks == 1


def test_send_then_sends_the_second_only_after_the_first_is_acknowledged() -> None:
    acks, producer, _ = delivery()
    acks.send_then(record("first"), record("second"))
    assert producer.sent == ["first"]
    acks.serve(0)
    assert producer.sent == ["first", "second"]
    producer.failing.add("third")
    acks.send_then(record("third"), record("never"))
    with pytest.raises(DeliveryFailed):
        acks.serve(0)
    assert producer.sent == ["first", "second", "third"]
