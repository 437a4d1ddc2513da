"""Poison records (undecodable bytes, unknown task types, a payload in the wrong schema, an
oversize record) and fatal errors go straight to the dead-letter queue with the reason; the
worker never stops or loops on them, and their offsets move on."""

from __future__ import annotations

import confluent_kafka

from streamtask import Task
from streamtask.kafka.headers import DeadLetterRecord
from streamtask.retry import RetryPolicy
from tests.inprocess import new_app, run_worker, send_all
from tests.test_retry_ladder import read_all


def test_each_kind_of_poison_reaches_the_dlq_at_once_with_its_reason(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    ok: list[str] = []

    @app.stage("strict", partitions=1, payload="photos.ResizeRequest", max_payload_bytes=2000,
               retry=RetryPolicy(max_attempts=3, delay=30))
    def strict(task: Task) -> None:
        if task.payload["photo_id"] == "fatal":
            raise TypeError("handler bug: a fatal error")
        ok.append(task.payload["photo_id"])

    def photo(name: str) -> dict[str, object]:
        return {"photo_id": name, "width": 1, "height": 1}

    send_all(app, "strict", [photo("a"), photo("fatal"), photo("b")])
    topic = f"t{unique}.strict"
    other = new_app(kafka.bootstrap, unique + "x")
    other.stage("strict")(lambda task: None)  # same task type, free-form JSON payload
    raw = confluent_kafka.Producer({"bootstrap.servers": kafka.bootstrap})
    raw.produce(topic, b"\x00garbage bytes", key=b"g")
    raw.produce(topic, app.codec.encode(Task.new("not_a_stage", {"n": 99})))
    raw.produce(topic, other.codec.encode(Task.new("strict", {"photo_id": 5})))
    raw.produce(topic, app.codec.encode(Task.new("strict", photo("x" * 3000))))
    raw.flush(10)
    send_all(app, "strict", [photo("c")])

    stats = run_worker(app, max_tasks=8)
    assert sorted(ok) == ["a", "b", "c"]
    assert stats.counts["task.dead_lettered"] == 5
    assert stats.counts.get("task.retried", 0) == 0
    dead = [DeadLetterRecord.from_message(m.topic(), m.partition(), m.offset(), m.key(),
                                          m.value(), m.headers())
            for m in read_all(kafka.bootstrap, app.stages["strict"].dlq_topic, 5)]
    dead.sort(key=lambda d: d.origin.offset)
    reasons = [(d.reason, d.origin.offset) for d in dead]
    assert reasons == [("fatal", 1), ("poison:undecodable", 3),
                       ("poison:unknown-task-type", 4), ("poison:undecodable", 5),
                       ("poison:oversize", 6)]
    assert dead[1].value == b"\x00garbage bytes" and dead[1].key == b"g"
    assert "TypeError" in dead[0].error_type and "fatal" in dead[0].message
    assert "exceeds max_payload_bytes=2000" in dead[4].message
    again = run_worker(app, idle_timeout=2.0)
    assert again.counts.get("task.dead_lettered", 0) == 0
