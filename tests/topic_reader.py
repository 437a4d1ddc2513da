"""Read a whole topic as a read_committed consumer sees it, up to its end offsets.

Tests that assert "exactly once" or "none missing" must see everything there is: a read that
stops after a timeout or a record count could miss a late duplicate. This reader stops only
when every partition reported its end (``enable.partition.eof``) at or past the end offset
taken when the read started, so transaction markers and aborted records are accounted for.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import confluent_kafka


def read_to_end(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every committed record of ``topic`` below its end offsets at the time of the call."""
    reader = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "isolation.level": "read_committed",
        "enable.partition.eof": True, "logger": logging.getLogger("tests.reader")})
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for partition in partitions:
            _low, high = reader.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition), timeout=10)
            ends[partition] = high
        reader.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                       for p in partitions])
        pending = {p for p, high in ends.items() if high > 0}
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} did not reach its end offsets {ends} "
                                     f"within {timeout:.0f}s (still at partitions {pending})")
            message = reader.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                if message.offset() >= ends[message.partition()]:
                    pending.discard(message.partition())
            else:
                raise AssertionError(f"reading {topic}: {error.str()}")
        return records
    finally:
        reader.close()
