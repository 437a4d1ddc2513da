"""The headers of retry and dead-letter records, and reading dead letters back.

Header names follow Spring Kafka's where they fit, so kafka-ui, Spring consumers and other
tools understand our retries and dead letters. As in Spring, partitions and attempts are
4-byte and offsets and timestamps 8-byte big-endian integers; everything else, including
streamtask's own ``streamtask-*`` headers, is UTF-8 text. A dead letter keeps the original
record's value, key and headers untouched and adds these.
"""

from __future__ import annotations

import struct
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

ORIGINAL_TOPIC = "kafka_dlt-original-topic"
ORIGINAL_PARTITION = "kafka_dlt-original-partition"
ORIGINAL_OFFSET = "kafka_dlt-original-offset"
ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"
ORIGINAL_GROUP = "kafka_dlt-original-consumer-group"
EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
EXCEPTION_CAUSE_FQCN = "kafka_dlt-exception-cause-fqcn"
EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
EXCEPTION_STACKTRACE = "kafka_dlt-exception-stacktrace"
RETRY_ATTEMPTS = "retry_topic-attempts"
RETRY_DUE = "retry_topic-backoff-timestamp"
RETRY_ORIGINAL_TIMESTAMP = "retry_topic-original-timestamp"
REASON = "streamtask-reason"
STAGE = "streamtask-stage"
WORKER = "streamtask-worker"
DEAD_AT = "streamtask-dead-at"
REPLAYS = "streamtask-replays"
ERRORS = "streamtask-errors"

OURS = frozenset({
    ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET, ORIGINAL_TIMESTAMP, ORIGINAL_GROUP,
    EXCEPTION_FQCN, EXCEPTION_CAUSE_FQCN, EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE,
    RETRY_ATTEMPTS, RETRY_DUE, RETRY_ORIGINAL_TIMESTAMP, REASON, STAGE, WORKER, DEAD_AT,
    ERRORS})
"""Headers a retry or dead-letter step writes; they are replaced, never stacked."""

MAX_TRACEBACK = 8192
Headers = list[tuple[str, str | bytes | None]]


def int32(value: int) -> bytes:
    return struct.pack(">i", value)


def int64(value: int) -> bytes:
    return struct.pack(">q", value)


def read_int(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    if len(raw) == 4:
        return int(struct.unpack(">i", raw)[0])
    if len(raw) == 8:
        return int(struct.unpack(">q", raw)[0])
    try:
        return int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return None


def fqcn(error: BaseException) -> str:
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"


def bounded_traceback(error: BaseException) -> str:
    text = "".join(traceback.format_exception(error))
    return text if len(text) <= MAX_TRACEBACK else "...\n" + text[-MAX_TRACEBACK:]


def carried(headers: Sequence[tuple[str, bytes | None]] | None) -> Headers:
    """The original record's headers without those a previous retry/DLQ step wrote."""
    return [(k, v or b"") for k, v in headers or () if k not in OURS]


def find(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None


@dataclass(frozen=True)
class Origin:
    """Where a record failed: its topic, partition, offset, timestamp and consumer group."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    group: str


@dataclass(frozen=True)
class Failure:
    """Why: the error (None for poison records), the reason word and a message."""

    reason: str
    message: str
    error: BaseException | None = None


def dead_letter_headers(origin: Origin, failure: Failure, *, stage: str, worker: str,
                        attempts: int, now_ms: int, errors: str | None = None) -> Headers:
    """The headers explaining a dead letter."""
    error = failure.error
    cause = error.__cause__ if error is not None else None
    headers: Headers = [
        (ORIGINAL_TOPIC, origin.topic.encode()),
        (ORIGINAL_PARTITION, int32(origin.partition)),
        (ORIGINAL_OFFSET, int64(origin.offset)),
        (ORIGINAL_TIMESTAMP, int64(origin.timestamp)),
        (ORIGINAL_GROUP, origin.group.encode()),
        (EXCEPTION_FQCN, (fqcn(error) if error else f"streamtask.{failure.reason}").encode()),
        (EXCEPTION_MESSAGE, failure.message.encode()),
        (EXCEPTION_STACKTRACE, (bounded_traceback(error) if error else "").encode()),
        (RETRY_ATTEMPTS, int32(attempts)),
        (REASON, failure.reason.encode()),
        (STAGE, stage.encode()),
        (WORKER, worker.encode()),
        (DEAD_AT, str(now_ms).encode()),
    ]
    if cause is not None:
        headers.append((EXCEPTION_CAUSE_FQCN, fqcn(cause).encode()))
    if errors:
        headers.append((ERRORS, errors.encode()))
    return headers


@dataclass(frozen=True)
class DeadLetterRecord:
    """A dead letter as read back from a DLQ topic (for ``dlq ls|show|replay``)."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes
    origin: Origin
    error_type: str
    message: str
    stacktrace: str
    reason: str
    stage: str
    worker: str
    dead_at: int
    attempts: int
    replays: int
    errors: str
    carried_headers: Headers = field(default_factory=list)

    @classmethod
    def from_message(cls, topic: str, partition: int, offset: int, key: bytes | None,
                     value: bytes | None,
                     headers: Sequence[tuple[str, bytes | None]] | None) -> DeadLetterRecord:
        def text(name: str) -> str:
            raw = find(headers, name)
            return raw.decode(errors="replace") if raw else ""

        def number(name: str) -> int:
            return read_int(find(headers, name)) or 0

        def counted(name: str) -> int:  # streamtask's own headers are text
            raw = text(name)
            return int(raw) if raw.isdigit() else 0

        origin = Origin(text(ORIGINAL_TOPIC), number(ORIGINAL_PARTITION),
                        number(ORIGINAL_OFFSET), number(ORIGINAL_TIMESTAMP),
                        text(ORIGINAL_GROUP))
        return cls(topic, partition, offset, key, value or b"", origin, text(EXCEPTION_FQCN),
                   text(EXCEPTION_MESSAGE), text(EXCEPTION_STACKTRACE), text(REASON),
                   text(STAGE), text(WORKER), counted(DEAD_AT), number(RETRY_ATTEMPTS),
                   counted(REPLAYS), text(ERRORS), carried(headers))
