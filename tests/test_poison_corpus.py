"""The poison corpus: bad records and misbehaving handlers, interleaved with valid tasks on one
partition and consumed by ONE worker run. Each bad item ends in the dead-letter queue with its
reason (or runs, when it is only odd, not bad); the worker never stops; every valid task
around them runs exactly once; the committed offsets cover every record; every dead letter
fits the producer's record limit, and keeps a null value and null header values null.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import orjson

from streamtask import Task
from streamtask.kafka import clients as kafka
from streamtask.kafka import headers as dl
from streamtask.kafka.topics import ensure
from streamtask.model.app import App
from streamtask.model.pipeline import Switch
from streamtask.retry import DeadLetter, RetryPolicy
from tests.helpers import read_to_end
from tests.inprocess import new_app, run_worker

LABEL = "corpus-label"
LIMIT = kafka.MESSAGE_MAX_BYTES


class Unprintable(ValueError):
    """An error whose str() and repr() raise (user code formatting itself)."""

    def __str__(self) -> str:
        raise RuntimeError("str() of this error fails")

    def __repr__(self) -> str:
        raise RuntimeError("repr() of this error fails")


class UnprintableReason:
    def __str__(self) -> str:
        raise RuntimeError("no reason can be printed")


def behave(task: Task) -> Any:
    """What the handler does, by the prefix of the task's photo_id."""
    kind = task.payload["photo_id"].split(":")[0]
    if kind.startswith("ok") or kind == "big-ok":
        return None
    if kind == "route":
        return {"kind": "a"}
    if kind in ("fail", "big-fails", "huge-fails"):
        raise ValueError("this task always fails")
    actions: dict[str, Any] = {
        "str-raises": Unprintable,
        "exit": lambda: sys.exit(3),
        "interrupt": KeyboardInterrupt,
        "cancelled": asyncio.CancelledError,
        "dead-letter": lambda: DeadLetter(UnprintableReason()),  # type: ignore[arg-type]
        "huge-message": lambda: ValueError("m" * 3_000_000),
    }
    results: dict[str, Any] = {
        "unencodable": {"kind": "a", "x": object()},
        "switch-list": {"kind": [1, 2]},
        "switch-dict": {"kind": {"nested": True}},
        "huge-result": {"kind": "a", "blob": "x" * 1_000_000},
    }
    if kind in results:
        return results[kind]
    error = actions[kind]()
    raise error


@dataclass
class Item:
    """One record of the corpus and what must become of it."""

    label: str
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes | None]] | None = None
    reason: str | None = None
    """The dead letter's reason; None: the record runs as a task."""
    runs: int = 0
    """How many times the handler runs it."""


def photo(kind: str, pad: int = 0) -> dict[str, Any]:
    return {"photo_id": f"{kind}:{'x' * pad}", "width": 1, "height": 1}


def sized(app: App, kind: str, size: int) -> bytes:
    """The envelope of a ``kind`` task padded to exactly ``size`` bytes."""
    task = Task.new("work", photo(kind))
    pad = size - len(app.codec.encode(task))
    for _ in range(3):  # the string length's varint may grow by a byte or two
        value = app.codec.encode(task.with_(payload=photo(kind, pad)))
        pad += size - len(value)
    assert len(value) == size
    return value


def corpus(app: App, other: App) -> list[Item]:
    def task(kind: str) -> bytes:
        return app.codec.encode(Task.new("work", photo(kind)))

    valid = task("fail")
    flipped = bytearray(valid)
    flipped[3] ^= 0xFF
    unknown_fp = valid[:2] + os.urandom(8) + valid[10:]
    as_json = orjson.dumps({"task_id": "t1", "task_type": "work", "payload": photo("ok")})
    many = [(f"h{n}", str(n).encode()) for n in range(1000)]
    return [
        Item("garbage", b"\x00garbage bytes", b"g", reason="poison:undecodable"),
        Item("empty", b"", reason="poison:undecodable"),
        Item("null value", None, b"null", [("nullable", None)],
             reason="poison:undecodable"),
        Item("truncated envelope", valid[: len(valid) // 2], reason="poison:undecodable"),
        Item("flipped fingerprint", bytes(flipped), reason="poison:undecodable"),
        Item("unknown fingerprint", unknown_fp, reason="poison:undecodable"),
        Item("unknown task type", app.codec.encode(Task.new("not_a_stage", {"n": 1})),
             reason="poison:unknown-task-type"),
        Item("payload in the wrong schema",
             other.codec.encode(Task.new("work", {"photo_id": 5})),
             reason="poison:undecodable"),
        Item("JSON instead of Avro", as_json, reason="poison:undecodable"),
        Item("oversize", b"\x01" * 1_020_000, reason="poison:oversize"),
        Item("non-UTF-8 key and header values", task("ok"), b"\xff\xfe\x80",
             [("bin", b"\xc3\x28\xff"), (dl.ERRORS, b"\xff\xfe[")], runs=1),
        Item("1000 headers", task("ok"), headers=list(many), runs=1),
        Item("1000 headers, failing", task("exit"), headers=list(many),
             reason="not-retryable", runs=1),
        Item("errors header of another shape", task("fail"),
             headers=[(dl.ERRORS, b'{"not": "a list"}')], reason="exhausted", runs=2),
        Item("errors header of another shape, poison", b"\x07junk",
             headers=[(dl.ERRORS, b'"text"'), ("nullable", None)],
             reason="poison:undecodable"),
        Item("str() of the error raises", task("str-raises"), reason="exhausted", runs=2),
        Item("sys.exit()", task("exit"), reason="not-retryable", runs=1),
        Item("KeyboardInterrupt", task("interrupt"), reason="not-retryable", runs=1),
        Item("CancelledError from a plain handler", task("cancelled"),
             reason="not-retryable", runs=1),
        Item("DeadLetter whose reason cannot print", task("dead-letter"),
             reason="requested", runs=1),
        Item("3 MB error message", task("huge-message"), reason="exhausted", runs=2),
        Item("un-encodable result", task("unencodable"), reason="fatal", runs=1),
        Item("switch on a list", task("switch-list"), reason="fatal", runs=1),
        Item("switch on a dict", task("switch-dict"), reason="fatal", runs=1),
        Item("1 MB result", task("huge-result"), reason="unproducible", runs=1),
        Item("999,000-byte task that runs", sized(app, "big-ok", 999_000), runs=1),
        Item("999,000-byte task that fails", sized(app, "big-fails", 999_000),
             reason="exhausted", runs=2),
        Item("999,950-byte task that fails", sized(app, "huge-fails", 999_950),
             reason="unproducible", runs=1),
        Item("a result routed on", task("route"), runs=1),
    ]


def produce(bootstrap: str, topic: str, items: list[Item], app: App) -> list[str]:
    """Each item, with a valid task before and after it; returns the valid tasks' ids."""
    raw = confluent_kafka.Producer({"bootstrap.servers": bootstrap,
                                    "message.max.bytes": 1_048_000})
    valid: list[str] = []
    for n, item in enumerate(items):
        ok = photo(f"ok-{n}")
        valid.append(ok["photo_id"])
        raw.produce(topic, app.codec.encode(Task.new("work", ok)))
        headers = [*(item.headers or []), (LABEL, item.label.encode())]
        raw.produce(topic, item.value, item.key, headers=headers)
        raw.poll(0)
    assert raw.flush(30) == 0
    return valid


def test_every_kind_of_poison_is_dead_lettered_and_the_worker_runs_on(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    ran: list[str] = []

    @app.stage("work", partitions=1, payload="photos.ResizeRequest",
               then=Switch("kind", {"a": "sink"}),
               retry=RetryPolicy(max_attempts=2, levels=(0.2,)))
    def work(task: Task) -> Any:
        ran.append(task.payload["photo_id"].split(":")[0])
        return behave(task)

    app.stage("sink")(lambda task: None)
    other = new_app(kafka.bootstrap, unique + "x")
    other.stage("work")(lambda task: None)  # the same task type with a free-form payload
    ensure(app)
    stage = app.stages["work"]
    items = corpus(app, other)
    assert len(items) >= 20
    valid = produce(kafka.bootstrap, stage.topic, items, app)

    stats = run_worker(app, ["work"], idle_timeout=4.0)  # returns: it never stopped

    runs = Counter(ran)
    assert {name: runs[name.split(":")[0]] for name in valid} == dict.fromkeys(valid, 1)
    expected_runs = Counter()
    for item in items:
        if item.runs:
            kind = app.codec.decode(item.value or b"").payload["photo_id"].split(":")[0]
            expected_runs[kind] += item.runs
    assert {k: v for k, v in runs.items() if not k.startswith("ok-")} == expected_runs
    dead = {dict(m.headers())[LABEL].decode(): m
            for m in read_to_end(kafka.bootstrap, stage.dlq_topic)}
    expected = {item.label: item.reason for item in items if item.reason}
    got = {label: dl.DeadLetterRecord.from_message(
        m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers()).reason
        for label, m in dead.items()}
    assert got == expected
    assert stats.counts["task.dead_lettered"] == len(expected)
    assert stats.counts["task.succeeded"] == len(valid) + sum(not i.reason for i in items)
    for label, message in dead.items():
        size = dl.record_size(message.value(), message.key(), message.headers())
        assert size <= LIMIT, f"{label}: a dead letter of {size} bytes"
    _check_kept_and_omitted(dead, {item.label: item for item in items})
    _check_committed(app)
    assert len(read_to_end(kafka.bootstrap, app.stages["sink"].topic)) == 1

    again = run_worker(app, ["work"], idle_timeout=2.0)
    assert again.counts.get("task.dead_lettered", 0) == 0
    assert again.counts.get("task.succeeded", 0) == 0


def _check_kept_and_omitted(dead: dict[str, Any], items: dict[str, Item]) -> None:
    """Values, keys and headers are kept as they were, null included, unless too large."""
    for label, message in dead.items():
        headers = message.headers()
        omitted = dl.find(headers, dl.VALUE_OMITTED)
        original = items[label].value
        if omitted is None:
            assert message.value() == original, label
        else:
            assert message.value() is None and int(omitted) == len(original or b""), label
    assert dead["null value"].value() is None
    assert dead["null value"].key() == b"null"
    assert ("nullable", None) in dead["null value"].headers()
    assert ("nullable", None) in dead["errors header of another shape, poison"].headers()
    assert dl.find(dead["oversize"].headers(), dl.VALUE_OMITTED) == b"1020000"
    assert dl.find(dead["999,950-byte task that fails"].headers(), dl.VALUE_OMITTED)
    assert dl.find(dead["garbage"].headers(), dl.VALUE_OMITTED) is None
    for label in ("oversize", "999,950-byte task that fails"):  # coordinates and reason stay
        record = dl.DeadLetterRecord.from_message(
            "dlq", 0, 0, dead[label].key(), dead[label].value(), dead[label].headers())
        assert record.origin.topic and record.origin.offset >= 0 and record.reason
    record = dl.DeadLetterRecord.from_message(
        "dlq", 0, 0, None, None, dead["str() of the error raises"].headers())
    assert record.error_type.endswith("Unprintable")
    assert "str() failed" in record.message
    assert len(dead["1000 headers, failing"].headers()) > 1000


def _check_committed(app: App) -> None:
    """Both groups committed up to the end of the input topic and of the retry level."""
    stage = app.stages["work"]
    for group, topic in ((stage.group, stage.topic),
                         (stage.group + ".retry", next(iter(stage.retry_topics)))):
        reader = kafka.consumer(app.kafka, group)
        try:
            tp = kafka.TopicPartition(topic, 0)
            _low, high = reader.get_watermark_offsets(tp, timeout=10, cached=False)
            [committed] = reader.committed([tp], timeout=10)
            assert committed.offset == high, f"{group} committed {committed.offset} of {high}"
        finally:
            reader.close()
