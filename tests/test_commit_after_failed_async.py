"""A position whose asynchronous commit failed (its report not served yet) is still committed
by the synchronous commit that follows on revoke or shutdown.

The asynchronous commit fails for real: its topic does not exist yet. The topic is created
before the synchronous commit, which then succeeds, as after a rebalance that failed an
interval commit with ILLEGAL_GENERATION.
"""

from __future__ import annotations

import time

from confluent_kafka.admin import NewTopic

from streamtask.config import KafkaSettings
from streamtask.events import EventBus
from streamtask.kafka import clients as kafka
from streamtask.worker.delivery import Committer
from streamtask.worker.offsets import PartitionOffsets


def test_shutdown_commit_covers_a_failed_asynchronous_commit(kafka_broker, unique) -> None:
    settings = KafkaSettings(bootstrap=kafka_broker.bootstrap)
    topic = f"t{unique}.commits"
    tracker = PartitionOffsets()
    for offset in range(5):
        tracker.received(offset)
        tracker.finished(offset)
    committer = Committer({(topic, 0): tracker}, EventBus())
    consumer = kafka.consumer(settings, f"t{unique}", on_commit=committer.on_commit)
    try:
        committer.attach({topic: consumer})
        committer.commit(asynchronous=True)  # fails: no such topic (report not served yet)
        time.sleep(2)
        admin = kafka.admin(settings)
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
        committer.commit(asynchronous=False)  # shutdown / revoke
        [committed] = consumer.committed([kafka.TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    assert committed.offset == 5
