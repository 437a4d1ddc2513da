"""The one place that talks to confluent-kafka.

Other modules ask for clients here, so defaults that make delivery safe (idempotence,
``acks=all``, no auto-commit, no automatic offset store) live in one spot, and librdkafka's
errors are mapped into :mod:`streamtask.errors`. librdkafka's own log lines go to the
``streamtask.kafka`` logger instead of stderr.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import confluent_kafka
from confluent_kafka import admin as kafka_admin

from streamtask.config import KafkaSettings
from streamtask.errors import (
    AuthenticationFailed,
    AuthorizationFailed,
    BrokerUnavailable,
    ConfigurationError,
    DeliveryFailed,
    KafkaError,
    ProduceRejected,
    StreamtaskError,
)

log = logging.getLogger("streamtask.kafka")

Message = confluent_kafka.Message
TopicPartition = confluent_kafka.TopicPartition
KafkaException = confluent_kafka.KafkaException
LibrdkafkaError = confluent_kafka.KafkaError
"""librdkafka's error object (streamtask's own ``KafkaError`` is in :mod:`streamtask.errors`)."""
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


_T = TypeVar("_T")

MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``: it refuses larger records at ``produce``."""

RECORD_FAULTS = frozenset({
    confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE,
    confluent_kafka.KafkaError._INVALID_ARG,
    confluent_kafka.KafkaError._UNKNOWN_PARTITION,
})
"""Codes ``produce`` raises for a record at fault, not for a broken producer."""

RecordHeaders = Sequence[tuple[str, str | bytes | None]]


def _base(settings: KafkaSettings) -> dict[str, Any]:
    return {**settings.client_config(), "logger": log}


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


def admin(settings: KafkaSettings, **overrides: Any) -> kafka_admin.AdminClient:
    return kafka_admin.AdminClient({**_base(settings), **settings.extra, **overrides})


def max_record_bytes(settings: KafkaSettings) -> int:
    """The largest record (value, key and headers) the producers here accept."""
    return int(settings.extra.get("message.max.bytes", MESSAGE_MAX_BYTES))


def produce(client: Any, topic: str, value: bytes | None, key: bytes | str | None = None, *,
            headers: RecordHeaders | None = None, partition: int = -1,
            on_delivery: Callable[[Any, Any], None] | None = None,
            wait: float = 0.05, serve: Callable[[float], Any] | None = None) -> None:
    """Hand one record to ``client`` (a producer), waiting while its local queue is full.

    The one produce call of streamtask: librdkafka reports a full queue with ``BufferError``
    (served here by polling until there is room: ``serve(wait)``, by default the client's
    own ``poll``) and refuses a bad record at once with a
    ``KafkaException``, mapped to :class:`ProduceRejected`. Delivery errors come later,
    through ``on_delivery``.
    """
    where = _where(partition, headers, on_delivery)
    while True:
        try:
            if where is None:  # a chain's child: fixed arguments, no dict per record
                client.produce(topic, value, key, on_delivery=on_delivery)
            else:
                client.produce(topic, value, key, **where)
            return
        except BufferError:
            (serve or client.poll)(wait)
        except confluent_kafka.KafkaException as exc:
            raise rejected(exc, topic) from exc


def _where(partition: int, headers: RecordHeaders | None,
           on_delivery: Callable[[Any, Any], None] | None) -> dict[str, Any] | None:
    """``produce``'s keyword arguments, or None for the per-task common case (only a
    delivery callback). Naming no partition and no headers when there are none saves a
    quarter of produce's cost, which counts on a per-task path."""
    if partition < 0 and not headers and on_delivery is not None:
        return None
    where: dict[str, Any] = {"partition": partition} if partition >= 0 else {}
    if headers:
        where["headers"] = headers
    if on_delivery is not None:
        where["on_delivery"] = on_delivery
    return where


def rejected(exc: confluent_kafka.KafkaException, topic: str) -> ProduceRejected:
    """Map a synchronous produce error into :class:`ProduceRejected`."""
    error = exc.args[0] if exc.args else None
    if not isinstance(error, confluent_kafka.KafkaError):
        return ProduceRejected(f"record to {topic} was refused: {exc}", "UNKNOWN", False)
    about_record = error.code() in RECORD_FAULTS and not error.fatal()
    return ProduceRejected(f"record to {topic} was refused: {error.str()}", error.name(),
                           about_record)


def cluster_is_reachable(settings: KafkaSettings | str, timeout: float = 5.0) -> bool:
    """True when a broker at ``settings`` answers a metadata request within ``timeout``."""
    if isinstance(settings, str):
        settings = KafkaSettings(bootstrap=settings)
    try:
        admin(settings).list_topics(timeout=timeout)
    except confluent_kafka.KafkaException:
        return False
    return True


class ClientErrors:
    """Collects a client's ``error_cb`` reports, so a start-up check can tell "refused my
    credentials" (stop at once: retrying a wrong password only hammers the broker) from
    "nobody answers" (keep trying until the connect timeout)."""

    def __init__(self) -> None:
        # Bounded: a long-lived producer's callback keeps reporting while a broker flaps.
        self.errors: deque[confluent_kafka.KafkaError] = deque(maxlen=100)

    def __call__(self, error: confluent_kafka.KafkaError) -> None:
        self.errors.append(error)

    def refusal(self) -> confluent_kafka.KafkaError | None:
        """The first refused login or failed TLS handshake: retrying cannot fix either."""
        for error in self.errors:
            if error.code() in (confluent_kafka.KafkaError._AUTHENTICATION,
                                confluent_kafka.KafkaError._SSL):
                return error
        return None

    def last(self) -> str:
        """The most telling error seen: a transport error says more than "all brokers down"."""
        telling = [e for e in self.errors
                   if e.code() != confluent_kafka.KafkaError._ALL_BROKERS_DOWN]
        return (telling or self.errors)[-1].str() if self.errors else "no answer"


def check_reachable(client: Any, errors: ClientErrors, settings: KafkaSettings,
                    timeout: float | None = None) -> None:
    """Wait until ``client`` (whose ``error_cb`` is ``errors``) gets cluster metadata.

    Raises :class:`AuthenticationFailed` as soon as the cluster refuses the credentials, and
    :class:`BrokerUnavailable` when nothing answered within ``timeout`` (default: the
    settings' ``connect_timeout``). Messages never contain a secret.
    """
    limit = settings.connect_timeout if timeout is None else timeout
    deadline = time.monotonic() + limit
    while True:
        try:
            client.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except confluent_kafka.KafkaException as exc:
            if not errors.errors and exc.args:
                errors(exc.args[0])
        client.poll(0)
        refused = errors.refusal()
        if refused is not None and refused.code() == confluent_kafka.KafkaError._SSL:
            raise BrokerUnavailable(
                f"the TLS handshake with {settings.describe()} failed: {refused.str()}. Check "
                "STREAMTASK_SSL_CA (the CA that signed the brokers' certificates) and "
                "STREAMTASK_SECURITY_PROTOCOL")
        if refused is not None:
            raise AuthenticationFailed(
                f"the cluster at {settings.describe()} refused the credentials: "
                f"{refused.str()}. Check the user name, password and SASL mechanism "
                "(STREAMTASK_SASL_USERNAME, STREAMTASK_SASL_PASSWORD[_FILE], "
                "STREAMTASK_SASL_MECHANISM)")
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(
                f"no Kafka broker answered at {settings.describe()} within {limit:.0f}s "
                f"({errors.last()}). Start one with `streamtask kafka up` or set --bootstrap "
                "/ STREAMTASK_BOOTSTRAP (and STREAMTASK_SECURITY_PROTOCOL for a secured "
                "cluster).")


def wait_for_cluster(settings: KafkaSettings, timeout: float | None = None) -> None:
    """Fail fast with a clear message instead of hanging when no broker answers."""
    errors = ClientErrors()
    # Silent (log_level 0): its errors end up in the one exception this raises.
    check_reachable(admin(settings, error_cb=errors, log_level=0), errors, settings, timeout)


def raise_for(error: confluent_kafka.KafkaError | None, what: str) -> None:
    """Map a librdkafka error into streamtask's hierarchy (no-op for ``None``)."""
    if error is None:
        return
    if error.code() == confluent_kafka.KafkaError._TRANSPORT:
        raise BrokerUnavailable(f"{what}: {error.str()}")
    raise KafkaError(f"{what}: {error.str()}")


def delivery_error(error: confluent_kafka.KafkaError, topic: str,
                   settings: KafkaSettings | None = None) -> DeliveryFailed:
    """A failed acknowledgement; a refused write names the ACL to ask the admin for."""
    if error.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return DeliveryFailed(f"record to {topic} was not acknowledged: "
                              f"{denied(settings, 'Write', 'topic', topic)}")
    if error.code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
        return DeliveryFailed(f"record to {topic} was not acknowledged: the topic does not "
                              "exist; create the app's topics with `streamtask topics ensure`")
    return DeliveryFailed(f"record to {topic} was not acknowledged: {error.str()}")


def denied(settings: KafkaSettings | None, operation: str, resource: str, name: str) -> str:
    """Say which ACL is missing, as the command an admin runs to grant it."""
    user = settings.sasl_username if settings is not None else None
    principal = f"User:{user}" if user else "<this client's principal>"
    return (f"not authorized to {operation.upper()} {resource} {name!r} as {principal}; ask the "
            f"cluster admin for: kafka-acls.sh --add --allow-principal {principal} "
            f"--operation {operation} --{resource} {name}")


def producer_failure(exc: BaseException, settings: KafkaSettings,
                     topic: str) -> StreamtaskError | None:
    """Map what a producer call raised after a fatal librdkafka error (None: not one).

    confluent-kafka raises a fatal error from inside the next callback it serves, which
    Python reports as a ``SystemError`` caused by the ``KafkaException``; the cause is the
    real error. The usual one on a secured cluster: a principal with ``Write`` on no topic
    gets no idempotent producer id (CLUSTER_AUTHORIZATION_FAILED).
    """
    cause = exc if isinstance(exc, confluent_kafka.KafkaException) else exc.__cause__
    if not isinstance(cause, confluent_kafka.KafkaException) or not cause.args:
        if isinstance(exc, SystemError) and cause is None:
            # Now and then confluent-kafka loses the exception it meant to raise from the
            # callback ("returned NULL without setting an exception"): the same fatal error.
            return KafkaError(
                f"the producer failed fatally ({exc}; librdkafka logged the reason as FATAL). "
                "On a secured cluster this is usually CLUSTER_AUTHORIZATION_FAILED: "
                + denied(settings, "Write", "topic", topic))
        return None
    error = cause.args[0]
    if error.code() == confluent_kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        return AuthorizationFailed(
            "the cluster refused an idempotent producer id (CLUSTER_AUTHORIZATION_FAILED), "
            "which it grants only with Write on some topic; "
            + denied(settings, "Write", "topic", topic))
    if error.code() == confluent_kafka.KafkaError._FATAL:  # raised later, reason logged once
        return KafkaError(
            f"the producer failed fatally ({error.str()}; librdkafka logged the reason as "
            "FATAL). On a secured cluster this is usually CLUSTER_AUTHORIZATION_FAILED: "
            + denied(settings, "Write", "topic", topic))
    return mapped(cause, "producer failed")


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


def retrying(call: Callable[[], _T], what: str, deadline: float) -> _T:
    """``call()``, asked again while its error is retriable (a topic created a moment ago
    may have no leader yet, or its leader is moving) until ``deadline``."""
    while True:
        try:
            return call()
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, confluent_kafka.KafkaError) and (
                error.retriable() or error.code() in _NO_LEADER_YET)
            if not retriable or time.monotonic() >= deadline:
                raise mapped(exc, what) from exc
            time.sleep(0.2)


def _watermarks(reader: confluent_kafka.Consumer, tp: TopicPartition,
                deadline: float) -> tuple[int, int]:
    """A partition's low and high offsets (see :func:`retrying`)."""
    low, high = retrying(lambda: reader.get_watermark_offsets(
        tp, timeout=max(deadline - time.monotonic(), 0.1)),
        f"reading the offsets of {tp.topic}[{tp.partition}]", deadline)
    return int(low), int(high)


def read_committed(settings: KafkaSettings, topic: str,
                   partitions: Sequence[int] | None = None, timeout: float = 30.0, *,
                   group: str | None = None) -> list[Any]:
    """Every committed record of ``topic``'s ``partitions`` (default: all of them) below the
    end offsets taken when the read starts, in offset order per partition.

    A partition is done when librdkafka reports its end (``enable.partition.eof``) at or past
    that offset, not at the record at end - 1: in a topic written in transactions that offset
    is a commit marker, which no consumer ever returns. Not reaching every end within
    ``timeout`` raises :class:`~streamtask.errors.KafkaError`: the read never returns less
    than there is (tests asserting "none missing, none twice" rely on that).
    """
    reader = confluent_kafka.Consumer({**_base(settings), **settings.extra,
                                       "group.id": group or f"streamtask-read-{topic}",
                                       "enable.auto.commit": False,
                                       "isolation.level": "read_committed",
                                       "enable.partition.eof": True})
    deadline = time.monotonic() + timeout
    try:
        ends = _end_offsets(reader, topic, partitions, deadline)
        records: list[Any] = []
        while ends:
            if time.monotonic() > deadline:
                raise KafkaError(f"reading {topic} did not reach its end offsets {ends} "
                                 f"within {timeout:.0f}s ({len(records)} records read)")
            message = reader.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                partition = int(message.partition() or 0)
                if (message.offset() or 0) >= ends.get(partition, 0):
                    ends.pop(partition, None)
        return records
    finally:
        reader.close()


def _end_offsets(reader: confluent_kafka.Consumer, topic: str,
                 partitions: Sequence[int] | None, deadline: float) -> dict[int, int]:
    """Assign ``reader`` to the non-empty ``partitions`` from their start; their ends."""
    if partitions is None:
        try:
            found = reader.list_topics(topic, timeout=max(deadline - time.monotonic(), 0.1))
        except confluent_kafka.KafkaException as exc:
            raise mapped(exc, f"listing the partitions of {topic}") from exc
        partitions = sorted(found.topics[topic].partitions)
    ends, start = {}, []
    for partition in partitions:
        low, high = _watermarks(reader, TopicPartition(topic, partition), deadline)
        if high > low:
            ends[partition] = high
            start.append(TopicPartition(topic, partition, low))
    if start:
        reader.assign(start)
    return ends


def read_partition(settings: KafkaSettings, topic: str, partition: int,
                   timeout: float = 30.0) -> list[tuple[str, bytes | None]]:
    """Every committed (key, value) of one partition up to its current end (restoring a
    changelog); see :func:`read_committed`."""
    return [((message.key() or b"").decode(), message.value())
            for message in read_committed(settings, topic, [partition], timeout,
                                          group=f"streamtask-restore-{topic}")]


class Transport(Protocol):
    """Where the runtime's Kafka clients come from.

    Workers, the task producer, joins and the trail open every client through their app's
    ``transport`` (see :attr:`streamtask.model.app.App.transport`), never by calling
    confluent-kafka directly, so :mod:`streamtask.testing` can run the very same worker over
    an in-memory log. The clients returned must behave like confluent-kafka's.
    """

    def consumer(self, settings: KafkaSettings, group: str, **overrides: Any) -> Any: ...

    def producer(self, settings: KafkaSettings, **overrides: Any) -> Any: ...

    def admin(self, settings: KafkaSettings, **overrides: Any) -> Any: ...

    def read_partition(self, settings: KafkaSettings, topic: str, partition: int,
                       timeout: float = 30.0) -> list[tuple[str, bytes | None]]: ...

    def wait_for_cluster(self, settings: KafkaSettings, timeout: float | None = None) -> None: ...


class KafkaTransport:
    """The real thing: clients of the cluster ``settings`` name."""

    consumer = staticmethod(consumer)
    producer = staticmethod(producer)
    admin = staticmethod(admin)
    read_partition = staticmethod(read_partition)
    wait_for_cluster = staticmethod(wait_for_cluster)


KAFKA: Transport = KafkaTransport()
