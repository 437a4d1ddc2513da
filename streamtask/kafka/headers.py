"""The headers of retry and dead-letter records, and reading dead letters back.

Header names follow Spring Kafka's where they fit, so kafka-ui, Spring consumers and other
tools understand our retries and dead letters. As in Spring, partitions and attempts are
4-byte and offsets and timestamps 8-byte big-endian integers; everything else, including
streamtask's own ``streamtask-*`` headers, is UTF-8 text. A dead letter keeps the original
record's value, key and headers untouched (a null value or header value stays null) and adds
these. A dead letter that would exceed the producer's record limit drops, in this order, the
original value, the original headers, the long texts of its own headers and the key, and
says what it dropped (``streamtask-value-omitted`` and the like), so it always fits.
"""

from __future__ import annotations

import struct
import traceback
from collections.abc import Callable, Iterable, Sequence
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
VALUE_OMITTED = "streamtask-value-omitted"
"""On a dead letter too large to keep its value: the original value's size in bytes."""
HEADERS_OMITTED = "streamtask-headers-omitted"
"""On a dead letter too large to keep the original headers: how many were dropped."""
KEY_OMITTED = "streamtask-key-omitted"
"""On a dead letter too large to keep its key: the original key's size in bytes."""

OURS = frozenset({
    ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET, ORIGINAL_TIMESTAMP, ORIGINAL_GROUP,
    EXCEPTION_FQCN, EXCEPTION_CAUSE_FQCN, EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE,
    RETRY_ATTEMPTS, RETRY_DUE, RETRY_ORIGINAL_TIMESTAMP, REASON, STAGE, WORKER, DEAD_AT,
    ERRORS, VALUE_OMITTED, HEADERS_OMITTED, KEY_OMITTED})
"""Headers a retry or dead-letter step writes; they are replaced, never stacked."""

MAX_TRACEBACK = 8192
MAX_MESSAGE = 4000
"""Characters of an error message kept in ``kafka_dlt-exception-message``."""
SHORT_TEXT = 500
"""What a long header of ours is cut to when a dead letter must shrink to fit."""
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
        value = int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    # A text number past 64 bits is no header streamtask or Spring wrote, and written back
    # as a retry's int64 header it would fail the task's routing: treat it as absent.
    return value if -2**63 <= value < 2**63 else None


def fqcn(error: BaseException) -> str:
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"


def safe_str(value: object, form: Callable[[object], str] = str) -> str:
    """``str(value)`` (or ``form(value)``), or a placeholder when that raises: a user's
    object formats itself with the user's code, which may fail in any way."""
    try:
        return form(value)
    except BaseException as error:  # any failure of user code, even exit()
        return f"<{form.__name__}() failed: {type(error).__name__}>"


def describe(error: BaseException) -> str:
    """``Type: message`` of an error, bounded, without ever raising."""
    text = f"{type(error).__name__}: {safe_str(error)}"
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def bounded_traceback(error: BaseException) -> str:
    try:  # traceback guards str(error) itself; this guards the rest of the user's objects
        text = "".join(traceback.format_exception(error))
    except BaseException as failure:  # never let formatting end the worker
        text = f"<traceback failed: {type(failure).__name__}>"
    return text if len(text) <= MAX_TRACEBACK else "...\n" + text[-MAX_TRACEBACK:]


def carried(headers: Sequence[tuple[str, bytes | None]] | None) -> Headers:
    """The original record's headers without those a previous retry/DLQ step wrote."""
    return [(k, v) for k, v in headers or () if k not in OURS]


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
        (EXCEPTION_MESSAGE, failure.message[:MAX_MESSAGE].encode(errors="replace")),
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
    value: bytes | None
    """None for a null value, and for a value omitted because it was too large."""
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
    value_omitted: int | None = None
    """The original value's size when the dead letter could not keep it (too large)."""

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
        omitted = text(VALUE_OMITTED)
        return cls(topic, partition, offset, key, value, origin, text(EXCEPTION_FQCN),
                   text(EXCEPTION_MESSAGE), text(EXCEPTION_STACKTRACE), text(REASON),
                   text(STAGE), text(WORKER), counted(DEAD_AT), number(RETRY_ATTEMPTS),
                   counted(REPLAYS), text(ERRORS), carried(headers),
                   int(omitted) if omitted.isdigit() else None)


def record_size(value: bytes | None, key: bytes | str | None, headers: Headers) -> int:
    """A record's size as librdkafka counts it against ``message.max.bytes`` (a slight
    overestimate: the headers' varint lengths are counted as 10 bytes each)."""
    size = len(value or b"") + len(key or b"")
    for name, header in headers:
        size += len(name) + len(header or b"") + 10
    return size


Record = tuple[bytes | None, bytes | str | None, Headers]
"""(value, key, headers) of a dead letter being fitted."""


def _drop_value(value: bytes | None, key: bytes | str | None, headers: Headers) -> Record:
    return None, key, [*headers, (VALUE_OMITTED, str(len(value or b"")).encode())]


def _drop_carried(value: bytes | None, key: bytes | str | None, headers: Headers) -> Record:
    ours = [(k, v) for k, v in headers if k in OURS]
    return value, key, [*ours, (HEADERS_OMITTED, str(len(headers) - len(ours)).encode())]


def _shorten_texts(value: bytes | None, key: bytes | str | None, headers: Headers) -> Record:
    texts = {EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE, ERRORS}
    return value, key, [(k, v[-SHORT_TEXT:] if k in texts and isinstance(v, bytes) else v)
                        for k, v in headers]


def _drop_key(value: bytes | None, key: bytes | str | None, headers: Headers) -> Record:
    return value, None, [*headers, (KEY_OMITTED, str(len(key or b"")).encode())]


def fitted(value: bytes | None, key: bytes | str | None, headers: Headers,
           limit: int) -> Record:
    """A dead letter that fits in ``limit`` bytes: what does not fit is dropped, and the
    headers say so. Its reason and where it came from are always kept."""
    for shrink in (_drop_value, _drop_carried, _shorten_texts, _drop_key):
        if record_size(value, key, headers) <= limit:
            break
        value, key, headers = shrink(value, key, headers)
    return value, key, headers
