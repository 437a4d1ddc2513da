"""``streamtask kafka status|up|down`` on the session's broker: a second ``up`` reports the
running broker, and data persists across ``down``/``up``."""

from __future__ import annotations

import confluent_kafka
import pytest

from streamtask.config import KafkaSettings
from streamtask.kafka.clients import admin
from tests.test_cli_errors import streamtask


@pytest.mark.long
@pytest.mark.timeout(150)
def test_status_up_down_up_keeps_data(kafka, unique) -> None:
    if kafka.local is None:
        pytest.skip("the broker is external (STREAMTASK_BOOTSTRAP): it cannot be restarted")
    data_dir = str(kafka.local.data_dir)
    port = str(kafka.local.port)
    done = streamtask("kafka", "status", "--data-dir", data_dir)
    assert done.returncode == 0 and f"running: {kafka.bootstrap}" in done.stdout

    done = streamtask("kafka", "up", "--data-dir", data_dir, "--port", port)
    assert done.returncode == 0 and "already running" in done.stderr
    assert done.stdout.strip() == kafka.bootstrap

    topic = f"persist-{unique}"
    new = confluent_kafka.admin.NewTopic(topic, 1, 1)
    client = admin(KafkaSettings(kafka.bootstrap))
    client.create_topics([new])[topic].result(20)
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka.bootstrap})
    producer.produce(topic, b"survives restarts")
    assert producer.flush(20) == 0

    try:
        assert streamtask("kafka", "down", "--data-dir", data_dir).stdout.strip() == "stopped"
        assert streamtask("kafka", "status", "--data-dir", data_dir).returncode == 3
        done = streamtask("kafka", "up", "--data-dir", data_dir, "--port", port, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == kafka.bootstrap
    finally:
        kafka.local.up(timeout=120)

    consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka.bootstrap,
                                         "group.id": f"g-{unique}",
                                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.value() == b"survives restarts"
    finally:
        consumer.close()
