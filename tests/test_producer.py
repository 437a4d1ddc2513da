"""The producer library: acknowledged futures, schema checks at send, failures surfaced."""

from __future__ import annotations

import pytest

from streamtask import DeliveryFailed, PayloadSchemaError, ProduceRejected
from streamtask.kafka.producer import Delivered, TaskProducer
from streamtask.kafka.topics import ensure
from tests.inprocess import new_app


def _photos(kafka, unique):
    app = new_app(kafka.bootstrap, unique)

    @app.stage("resize", payload="photos.ResizeRequest", partitions=3)
    def resize(task):
        return None

    ensure(app)
    return app


def test_send_resolves_to_the_written_position_and_keys_pick_partitions(kafka, unique) -> None:
    app = _photos(kafka, unique)
    with app.producer() as producer:
        first = producer.send("resize", {"photo_id": "p1", "width": 10, "height": 20},
                              key="p1", task_id="task-1")
        same_key = producer.send("resize", {"photo_id": "p1", "width": 1, "height": 2},
                                 key="p1")
    sent = first.result(10)
    assert isinstance(sent, Delivered)
    assert sent.task_id == "task-1"
    assert sent.topic == f"t{unique}.resize"
    assert same_key.result(10).partition == sent.partition
    assert same_key.result(10).offset > sent.offset


def test_payload_not_matching_schema_is_rejected_at_send(kafka, unique) -> None:
    app = _photos(kafka, unique)
    with app.producer() as producer, pytest.raises(PayloadSchemaError, match="width"):
        producer.send("resize", {"photo_id": "p1", "width": "wide", "height": 20})


def test_app_send_and_batch_send(kafka, unique) -> None:
    app = _photos(kafka, unique)
    app.send("resize", {"photo_id": "a", "width": 1, "height": 1})
    app.flush(10)
    with app.producer() as producer:
        futures = producer.send_many(
            "resize", [{"photo_id": str(n), "width": n, "height": n} for n in range(100)],
            key=lambda payload: payload["photo_id"])
    assert len({f.result(10).offset for f in futures}) >= 34  # 3 partitions, distinct offsets


def test_undeliverable_task_fails_its_future_and_flush(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)

    @app.stage("nowhere", topic=f"t{unique}.missing-topic")
    def nowhere(task):
        return None

    producer = TaskProducer(app, **{"message.timeout.ms": 1500})
    future = producer.send("nowhere", {"x": 1})
    with pytest.raises(DeliveryFailed, match="not delivered"):
        producer.flush(15)
    with pytest.raises(DeliveryFailed):
        future.result(1)


def test_a_task_too_large_to_produce_raises_produce_rejected_at_send(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    app.stage("work")(lambda task: None)
    ensure(app)
    with TaskProducer(app) as producer:
        with pytest.raises(ProduceRejected, match="too large") as raised:
            producer.send("work", {"blob": "x" * 1_000_001})
        assert raised.value.code == "MSG_SIZE_TOO_LARGE" and raised.value.about_record
        small = producer.send("work", {"blob": "small"})
        producer.flush(30)
        assert small.result(0).offset >= 0  # the producer is still usable


def test_a_fatal_error_confluent_kafka_lost_on_the_way_is_still_one_of_ours() -> None:
    """confluent-kafka now and then raises a bare SystemError ("returned NULL without setting
    an exception") where it meant to raise the producer's fatal error: the service still gets
    streamtask's error naming the ACL to ask for, never the SystemError (seen in CI on the
    secured cluster's missing-ACL test)."""
    from streamtask.config import KafkaSettings
    from streamtask.errors import KafkaError
    from streamtask.kafka import clients

    lost = SystemError("<built-in method flush of cimpl.Producer object> returned NULL "
                       "without setting an exception")
    failure = clients.producer_failure(lost, KafkaSettings(bootstrap="b:9092"), "app.work")
    assert isinstance(failure, KafkaError)
    assert "--operation Write --topic app.work" in str(failure)
