"""The one place that talks to confluent-kafka.

Other modules ask for clients here, so defaults that make delivery safe (idempotence,
``acks=all``, no auto-commit, no automatic offset store) live in one spot, and librdkafka's
errors are mapped into :mod:`streamtask.errors`. librdkafka's own log lines go to the
``streamtask.kafka`` logger instead of stderr.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import confluent_kafka
from confluent_kafka import admin as kafka_admin

from streamtask.config import KafkaSettings
from streamtask.errors import BrokerUnavailable, ConfigurationError, DeliveryFailed, KafkaError

log = logging.getLogger("streamtask.kafka")

Message = confluent_kafka.Message
TopicPartition = confluent_kafka.TopicPartition
KafkaException = confluent_kafka.KafkaException
OFFSET_INVALID = confluent_kafka.OFFSET_INVALID

PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "message.timeout.ms": 300_000,
}

TRANSACTIONAL_DEFAULTS: Mapping[str, Any] = {
    # A crashed worker's open transaction blocks read_committed readers until it is aborted:
    # by its successor's init_transactions (same transactional.id), else by this timeout.
    "transaction.timeout.ms": 30_000,
    "message.timeout.ms": 30_000,
}

CONSUMER_DEFAULTS: Mapping[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "isolation.level": "read_committed",
    # librdkafka's own prefetch queue: the worker's memory bound beyond its held tasks.
    "queued.max.messages.kbytes": 16_384,
    "queued.min.messages": 20_000,
    "fetch.max.bytes": 16 * 1024 * 1024,
    # Once the prefetch queue is full, librdkafka postpones a partition's next fetch by this
    # long (default 1000 ms) even when the queue drains sooner: a drained worker then sat
    # idle for 0.5-1 s at a time (measured), and so did the first fetch after a resume.
    "fetch.queue.backoff.ms": 20,
}


def _base(settings: KafkaSettings) -> dict[str, Any]:
    base: dict[str, Any] = {"bootstrap.servers": settings.bootstrap, "logger": log}
    return base


def producer(settings: KafkaSettings, **overrides: Any) -> confluent_kafka.Producer:
    """A producer that either delivers each record exactly once to the log or reports failure."""
    config = {**_base(settings), **PRODUCER_DEFAULTS, **settings.extra, **overrides}
    try:
        return confluent_kafka.Producer(config)
    except confluent_kafka.KafkaException as exc:
        raise ConfigurationError(f"invalid producer settings: {exc.args[0].str()}") from exc


def consumer(settings: KafkaSettings, group: str, **overrides: Any) -> confluent_kafka.Consumer:
    """A consumer whose offsets move only when streamtask stores and commits them."""
    config = {**_base(settings), **CONSUMER_DEFAULTS, "group.id": group,
              **settings.extra, **overrides}
    try:
        return confluent_kafka.Consumer(config)
    except confluent_kafka.KafkaException as exc:
        raise ConfigurationError(f"invalid consumer settings: {exc.args[0].str()}") from exc


def admin(settings: KafkaSettings) -> kafka_admin.AdminClient:
    return kafka_admin.AdminClient({**_base(settings), **settings.extra})


def cluster_is_reachable(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request within ``timeout``."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": log}
    client = kafka_admin.AdminClient(config)
    try:
        client.list_topics(timeout=timeout)
    except confluent_kafka.KafkaException:
        return False
    return True


def wait_for_cluster(settings: KafkaSettings, timeout: float | None = None) -> None:
    """Fail fast with a clear message instead of hanging when no broker answers."""
    limit = settings.connect_timeout if timeout is None else timeout
    try:
        admin(settings).list_topics(timeout=limit)
    except confluent_kafka.KafkaException as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answered at {settings.bootstrap} within {limit:.0f}s "
            f"({exc.args[0].str() if exc.args else exc}). Start one with `streamtask kafka up` "
            "or set --bootstrap / STREAMTASK_BOOTSTRAP."
        ) from exc


def raise_for(error: confluent_kafka.KafkaError | None, what: str) -> None:
    """Map a librdkafka error into streamtask's hierarchy (no-op for ``None``)."""
    if error is None:
        return
    if error.code() == confluent_kafka.KafkaError._TRANSPORT:
        raise BrokerUnavailable(f"{what}: {error.str()}")
    raise KafkaError(f"{what}: {error.str()}")


def delivery_error(error: confluent_kafka.KafkaError, topic: str) -> DeliveryFailed:
    return DeliveryFailed(f"record to {topic} was not acknowledged: {error.str()}")


def mapped(exc: confluent_kafka.KafkaException, what: str) -> KafkaError:
    """Wrap a raised librdkafka exception into streamtask's own type."""
    error = exc.args[0] if exc.args else None
    text = error.str() if isinstance(error, confluent_kafka.KafkaError) else str(exc)
    return KafkaError(f"{what}: {text}")


_NO_LEADER_YET = {confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION,
                  confluent_kafka.KafkaError.LEADER_NOT_AVAILABLE,
                  confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART,
                  confluent_kafka.KafkaError._TIMED_OUT, confluent_kafka.KafkaError._TRANSPORT}
"""Errors of a partition that was created a moment ago, or whose leader is moving."""


def _watermarks(reader: confluent_kafka.Consumer, tp: TopicPartition,
                deadline: float) -> tuple[int, int]:
    """A partition's low and high offsets, asking again while the error is retriable (a
    topic created a moment ago may have no leader yet) until ``deadline``."""
    import time

    while True:
        try:
            low, high = reader.get_watermark_offsets(
                tp, timeout=max(deadline - time.monotonic(), 0.1))
            return int(low), int(high)
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, confluent_kafka.KafkaError) and (
                error.retriable() or error.code() in _NO_LEADER_YET)
            if not retriable or time.monotonic() >= deadline:
                raise mapped(exc, f"reading the offsets of {tp.topic}[{tp.partition}]") from exc
            time.sleep(0.2)


def read_partition(settings: KafkaSettings, topic: str, partition: int,
                   timeout: float = 30.0) -> list[tuple[str, bytes | None]]:
    """Every (key, value) of one partition up to its current end (restoring a changelog)."""
    import time

    reader = confluent_kafka.Consumer({**_base(settings), **settings.extra,
                                       "group.id": f"streamtask-restore-{topic}",
                                       "enable.auto.commit": False})
    deadline = time.monotonic() + timeout
    try:
        low, high = _watermarks(reader, TopicPartition(topic, partition), deadline)
        if high <= low:
            return []
        reader.assign([TopicPartition(topic, partition, low)])
        records: list[tuple[str, bytes | None]] = []
        position = low
        while position < high:
            if time.monotonic() > deadline:
                raise KafkaError(f"restoring {topic}[{partition}] did not reach offset {high} "
                                 f"within {timeout:.0f}s")
            message = reader.poll(0.5)
            if message is None or message.error() is not None:
                continue
            records.append(((message.key() or b"").decode(), message.value()))
            position = (message.offset() or 0) + 1
        return records
    finally:
        reader.close()
