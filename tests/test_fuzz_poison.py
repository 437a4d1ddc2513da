"""Fuzz: random bytes, mutated envelopes and random header maps into the decoder and into the
worker's receive and failure paths. Only the documented outcomes may happen:

- the decoder returns a task or raises :class:`DecodeError`, nothing else;
- a received record is admitted as a task, or becomes exactly one dead letter with a
  ``poison:*`` reason; a failed task becomes a retry record or a dead letter;
- every record the worker produces is accepted by librdkafka's ``produce`` (a real producer
  that never connects: its size check runs locally) and fits the record limit.

No broker is needed: the worker is built but never started, with that producer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import confluent_kafka
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtask import App, KafkaSettings, Task, Worker
from streamtask.errors import DecodeError
from streamtask.kafka import headers as dl
from streamtask.retry import RetryPolicy
from streamtask.worker.delivery import AtLeastOnce
from streamtask.worker.offsets import PartitionOffsets

app = App("fuzz", kafka=KafkaSettings("127.0.0.1:9"))


@app.stage("work", partitions=1, payload="photos.ResizeRequest",
           retry=RetryPolicy(max_attempts=3, levels=(1.0, 5.0)))
def work(task: Task) -> None:
    """Never run here: the fuzz drives the worker's paths around the handler."""


STAGE = app.stages["work"]
VALID = app.codec.encode(Task.new("work", {"photo_id": "p", "width": 1, "height": 2}))
OURS = sorted(dl.OURS | {"streamtask-from-stage", "streamtask-join-partial"})
LIMIT = 1_000_000
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Message:
    """What the worker reads of a consumed record."""

    def __init__(self, topic: str, value: bytes | None, key: bytes | None,
                 headers: list[tuple[str, bytes | None]] | None, offset: int = 0) -> None:
        self._topic, self._value, self._key = topic, value, key
        self._headers, self._offset = headers, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def error(self) -> None:
        return None


class Recording:
    """A real producer (never connected) that keeps what was handed to it."""

    def __init__(self) -> None:
        self.real = confluent_kafka.Producer({"bootstrap.servers": "127.0.0.1:9",
                                              "message.timeout.ms": 1000, "log_level": 0})
        self.sent: list[tuple[str, bytes | None, Any, list[Any]]] = []

    def produce(self, topic: str, value: bytes | None, key: Any = None, **where: Any) -> None:
        self.real.produce(topic, value, key, **where)  # raises as librdkafka would
        self.sent.append((topic, value, key, list(where.get("headers") or [])))

    def poll(self, timeout: float = 0) -> int:
        return 0


@pytest.fixture(scope="module")
def producer() -> Iterator[Recording]:
    recording = Recording()
    yield recording
    recording.real.purge()


def worker_with(producer: Recording) -> Worker:
    worker = Worker(app)
    worker._delivery = AtLeastOnce(producer, app.kafka, worker.events, worker._finish,
                                   worker._partitions)
    worker._partitions[(STAGE.topic, 0)] = PartitionOffsets()
    for topic in STAGE.retry_topics:
        worker._partitions[(topic, 0)] = PartitionOffsets()
    return worker


names = st.one_of(st.sampled_from(OURS),
                  st.text(st.characters(exclude_categories=("Cs",)), max_size=20))
values = st.one_of(st.none(), st.binary(max_size=40),
                   st.integers(-2**70, 2**70).map(lambda n: str(n).encode()),
                   st.sampled_from([b"[]", b"{}", b'"x"', b"null", b"\xff\xfe", b"[1, 2]"]))
retry_headers = st.lists(st.tuples(
    st.sampled_from([dl.RETRY_ATTEMPTS, dl.RETRY_DUE, dl.ERRORS, dl.RETRY_ORIGINAL_TIMESTAMP]),
    st.one_of(values, st.integers(-2**31, 2**31 - 1).map(dl.int32),
              st.integers(-2**63, 2**63 - 1).map(dl.int64))), max_size=6)
header_maps = st.one_of(
    st.none(), st.lists(st.tuples(names, values), max_size=12), retry_headers,
    st.integers(900, 1100).map(lambda n: [(f"h{i}", b"v") for i in range(n)]))


@st.composite
def record_values(draw: st.DrawFn) -> bytes | None:
    """Random bytes, or a valid envelope truncated, extended or with bytes flipped."""
    kind = draw(st.sampled_from(["random", "truncated", "extended", "flipped", "valid",
                                 "none", "huge"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "truncated":
        return VALID[:draw(st.integers(0, len(VALID) - 1))]
    if kind == "extended":
        return VALID + draw(st.binary(min_size=1, max_size=20))
    if kind == "flipped":
        data = bytearray(VALID)
        for at in draw(st.lists(st.integers(0, len(VALID) - 1), min_size=1, max_size=4)):
            data[at] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "huge":
        return b"\xc3\x01" + b"x" * draw(st.integers(990_000, 1_040_000))
    return VALID if kind == "valid" else None


@FUZZ
@given(data=record_values())
def test_the_decoder_returns_a_task_or_raises_decode_error(data: bytes | None) -> None:
    try:
        task = app.codec.decode(data or b"")
    except DecodeError:
        return
    assert isinstance(task, Task)


def _check_produced(sent: list[tuple[str, bytes | None, Any, list[Any]]],
                    original: bytes | None) -> None:
    for topic, value, key, headers in sent:
        assert dl.record_size(value, key, headers) <= LIMIT
        if topic == STAGE.dlq_topic:
            reason = dl.find(headers, dl.REASON)
            assert reason is not None and reason.decode()
            omitted = dl.find(headers, dl.VALUE_OMITTED)
            assert value == original if omitted is None else value is None
        else:
            assert topic in STAGE.retry_topics and value == original


@FUZZ
@given(value=record_values(), key=st.one_of(st.none(), st.binary(max_size=30)),
       headers=header_maps, retry_level=st.booleans())
def test_a_received_record_is_admitted_or_dead_lettered(
        producer: Recording, value: bytes | None, key: bytes | None,
        headers: list[tuple[str, bytes | None]] | None, retry_level: bool) -> None:
    worker = worker_with(producer)
    producer.sent.clear()
    topic = next(iter(STAGE.retry_topics)) if retry_level else STAGE.topic
    offsets = worker._partitions[(topic, 0)]
    job = worker._intake.accept((topic, 0), offsets, Message(topic, value, key, headers))
    assert job is not None
    worker._take([job])
    if job.task is not None:  # admitted: the handler fails, its outcome routes
        assert job.task.attempt >= 1
        worker._route(job, None, ValueError("handler failed " * 1000), 0.0)
    else:
        assert len(producer.sent) == 1
        reason = dl.find(producer.sent[0][3], dl.REASON) or b""
        assert reason.startswith(b"poison:")
    assert len(producer.sent) == 1
    _check_produced(producer.sent, value)


@FUZZ
@given(value=st.one_of(st.none(), st.binary(max_size=50)),
       key=st.one_of(st.none(), st.binary(max_size=30)), headers=header_maps)
def test_dead_letters_read_back_from_any_headers(value: bytes | None, key: bytes | None,
                                                 headers: Any) -> None:
    record = dl.DeadLetterRecord.from_message("t.dlq", 0, 0, key, value, headers)
    assert record.value == value and isinstance(record.reason, str)


class Pausing:
    def pause(self, partitions: list[Any]) -> None:
        """The worker pauses a partition while it holds an early record."""


@FUZZ
@given(due=st.integers(-2**63, 2**63 - 1))
def test_a_retry_record_is_never_held_past_its_level_delay(producer: Recording,
                                                           due: int) -> None:
    worker = worker_with(producer)
    topic, delay = next(iter(STAGE.retry_topics.items()))
    worker._intake.open(lambda _group, _topics: Pausing(), STAGE.group)
    message = Message(topic, VALID, None, [(dl.RETRY_DUE, dl.int64(due))])
    written = message.timestamp()[1]
    if worker._intake._hold_if_early((topic, 0), message):
        wait = worker._intake.held.seconds_until_next(written)
        assert wait is not None and wait <= delay * 2 + 60
