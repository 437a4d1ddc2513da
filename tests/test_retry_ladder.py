"""A failing task climbs the retry ladder (never before its due time) or lands in the DLQ
with Spring-compatible headers; retries never block the rest of the partition."""

from __future__ import annotations

import time

import confluent_kafka
import pytest

from streamtask import Task
from streamtask.kafka import headers as dl
from streamtask.retry import Backoff, Retry, RetryPolicy
from tests.helpers import read_to_end
from tests.inprocess import new_app, run_worker, send_all


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 20) -> list:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": topic + "-r",
                                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    records, deadline = [], time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                records.append(message)
    finally:
        consumer.close()
    return records


def test_fails_twice_then_succeeds_on_the_third_attempt_never_early(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    runs: list[tuple[int, int, int | None]] = []

    @app.stage("flaky", partitions=2,
               retry=RetryPolicy(max_attempts=3, backoff=Backoff.EXPONENTIAL, delay=1.0))
    def flaky(task: Task) -> None:
        runs.append((task.attempt, time.time_ns() // 1_000_000, task.not_before))
        if task.attempt < 3:
            raise ConnectionError("upstream down")

    assert list(app.stages["flaky"].retry_topics) == [f"t{unique}.flaky.retry.1s",
                                                       f"t{unique}.flaky.retry.2s"]
    send_all(app, "flaky", [{"photo": 1}])
    stats = run_worker(app, max_tasks=3, idle_timeout=10)
    assert [attempt for attempt, _, _ in runs] == [1, 2, 3]
    assert stats.counts["task.retried"] == 2 and stats.counts["task.succeeded"] == 1
    (_, first, _), (_, second, due2), (_, third, due3) = runs
    assert due2 is not None and second >= due2 >= first + 1000
    assert due3 is not None and third >= due3 >= second + 2000
    assert read_to_end(kafka.bootstrap, app.stages["flaky"].dlq_topic) == []


def test_keeps_failing_lands_in_dlq_with_every_header(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)

    @app.stage("doomed", partitions=1, retry=RetryPolicy(max_attempts=2, delay=0.2))
    def doomed(task: Task) -> None:
        raise ValueError(f"bad photo {task.payload['photo']}")

    send_all(app, "doomed", [{"photo": 7}], key="k7")
    stats = run_worker(app, max_tasks=2)
    assert stats.counts["task.retried"] == 1 and stats.counts["task.dead_lettered"] == 1
    [dead] = read_all(kafka.bootstrap, app.stages["doomed"].dlq_topic, 1)
    headers = dict(dead.headers())
    for name in (dl.ORIGINAL_TOPIC, dl.ORIGINAL_PARTITION, dl.ORIGINAL_OFFSET,
                 dl.ORIGINAL_TIMESTAMP, dl.ORIGINAL_GROUP, dl.EXCEPTION_FQCN,
                 dl.EXCEPTION_MESSAGE, dl.EXCEPTION_STACKTRACE, dl.RETRY_ATTEMPTS,
                 dl.RETRY_DUE, dl.REASON, dl.STAGE, dl.WORKER, dl.DEAD_AT, dl.ERRORS):
        assert name in headers, name
    record = dl.DeadLetterRecord.from_message(dead.topic(), dead.partition(), dead.offset(),
                                              dead.key(), dead.value(), dead.headers())
    assert record.reason == "exhausted" and record.attempts == 2
    assert record.error_type == "ValueError" and "bad photo 7" in record.message
    assert record.origin.topic == f"t{unique}.doomed.retry.200ms"
    assert record.origin.group == f"t{unique}.doomed.retry"  # the retry levels' group
    assert dead.key() == b"k7"
    # The value is the task's record as first sent; the attempts travel in the headers.
    task = app.codec.decode(dead.value())
    assert task.payload == {"photo": 7} and task.attempt == 1
    assert app.codec.decode(dead.value(), attempt=record.attempts).attempt == 2
    assert "Traceback" in record.stacktrace


def test_a_backing_off_task_does_not_block_its_partition(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    finished: list[tuple[int, int]] = []

    @app.stage("mixed", partitions=1, retry=RetryPolicy(max_attempts=2, delay=6.0))
    def mixed(task: Task) -> None:
        if task.payload["n"] == 0 and task.attempt == 1:
            raise TimeoutError("slow dependency")
        finished.append((task.payload["n"], task.attempt))

    send_all(app, "mixed", [{"n": n} for n in range(20)])
    run_worker(app, max_tasks=21, idle_timeout=15)
    assert finished[-1] == (0, 2), "the retried task ran last, after its 6 s back-off"
    assert sorted(n for n, _ in finished[:-1]) == list(range(1, 20))


@pytest.mark.timeout(120)
def test_a_retry_wish_beyond_the_longest_level_waits_that_level_and_blocks_nothing(
        kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    runs: list[tuple[int, int, float]] = []

    @app.stage("wish", partitions=1, retry=RetryPolicy(max_attempts=2, levels=(0.5,)))
    def wish(task: Task) -> None:
        runs.append((task.payload["n"], task.attempt, time.monotonic()))
        if task.attempt == 1 and task.payload["n"] == 0:
            raise Retry(delay=3600)  # beyond the only level: waits 0.5 s, not an hour
        if task.attempt == 1:
            raise ConnectionError("down")  # behind it on the same retry level

    send_all(app, "wish", [{"n": 0}, {"n": 1}])
    stats = run_worker(app, max_tasks=4, idle_timeout=30)
    assert sorted((n, attempt) for n, attempt, _ in runs) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert stats.counts["task.retried"] == 2 and stats.counts["task.succeeded"] == 2
