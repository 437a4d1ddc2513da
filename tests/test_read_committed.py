"""``kafka.read_committed``, the one reader of a topic to its end (join changelog restores,
and the tests' exactly-once counts): it returns every committed record, none of an aborted
transaction, and ends: on a topic that ends in a commit marker, on empty partitions, and at
the last stable offset while a transaction is open."""

from __future__ import annotations

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from streamtask.kafka import clients as kafka_io
from tests import conftest


def _producer(broker: conftest.TestBroker, topic: str, partitions: int) -> confluent_kafka.Producer:
    """A transactional producer to a new topic of ``partitions`` partitions."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap,
                                         "transactional.id": f"{topic}-producer"})
    producer.init_transactions(30)
    return producer


def _transaction(producer: confluent_kafka.Producer, topic: str, values: list[bytes],
                 *, commit: bool) -> None:
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value, key=value, partition=0)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def test_reads_every_committed_record_and_ends_on_markers_and_empty_partitions(
        kafka: conftest.TestBroker, unique: str) -> None:
    topic = f"read-committed-{unique}"
    producer = _producer(kafka, topic, 3)  # partitions 1 and 2 stay empty
    _transaction(producer, topic, [b"a", b"b"], commit=True)
    _transaction(producer, topic, [b"aborted"], commit=False)
    _transaction(producer, topic, [b"c"], commit=True)  # the topic ends in a commit marker

    records = kafka_io.read_committed(kafka.settings, topic)

    assert [record.value() for record in records] == [b"a", b"b", b"c"]
    assert kafka_io.read_partition(kafka.settings, topic, 0) == [
        ("a", b"a"), ("b", b"b"), ("c", b"c")]


def test_an_open_transaction_ends_the_read_at_the_last_stable_offset(
        kafka: conftest.TestBroker, unique: str) -> None:
    topic = f"read-committed-open-{unique}"
    producer = _producer(kafka, topic, 1)
    _transaction(producer, topic, [b"a"], commit=True)
    producer.begin_transaction()  # open: its records are not readable yet
    producer.produce(topic, b"pending", key=b"pending", partition=0)
    producer.flush(30)

    assert [r.value() for r in kafka_io.read_committed(kafka.settings, topic)] == [b"a"]

    producer.commit_transaction(30)
    assert [r.value() for r in kafka_io.read_committed(kafka.settings, topic)] == [
        b"a", b"pending"]
