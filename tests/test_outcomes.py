"""Outcomes are data: a job and its result, error or poison map to records and events with no
Kafka involved (the worker only emits the events and hands the records to its delivery)."""

from __future__ import annotations

from typing import Any

import pytest

from streamtask import App, KafkaSettings, Task
from streamtask.events import Event
from streamtask.kafka import headers as dl
from streamtask.retry import RetryPolicy
from streamtask.worker import outcomes
from streamtask.worker.job import Job, Poison
from streamtask.worker.offsets import PartitionOffsets

app = App("outcomes", kafka=KafkaSettings("127.0.0.1:9"))


@app.stage("work", partitions=1, then="next", retry=RetryPolicy(max_attempts=2, levels=(5.0,)))
def work(task: Task) -> Any:
    """Never run: the tests give its outcomes."""


@app.stage("next", partitions=1)
def following(task: Task) -> None:
    """The chain's next stage."""


STAGE = app.stages["work"]
NOW = 1_700_000_000_000
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CONTEXT = outcomes.Context(app, STAGE.group, frozenset(STAGE.retry_topics), "w-1", 10_000)


class Message:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def topic(self) -> str:
        return STAGE.topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, NOW - 1000)


def job(attempt: int = 1, payload: Any = None) -> Job:
    task = Task.new("work", payload or {"photo": "p"})
    if attempt > 1:
        task = app.codec.decode(app.codec.encode(task), attempt=attempt)
    return Job((STAGE.topic, 0), 7, "k", task, STAGE, PartitionOffsets(),
               Message(app.codec.encode(task)))


def kinds(outcome: outcomes.Outcome) -> list[Event]:
    return [event for event, _fields in outcome.events]


def test_a_result_becomes_the_next_stages_task() -> None:
    received = job()
    assert received.task is not None
    outcome = outcomes.succeeded(CONTEXT, received, received.task, {"photo": "p"}, None, 0.1,
                                 NOW)
    assert kinds(outcome) == [Event.TASK_SUCCEEDED]
    [child] = outcome.records
    assert child.topic == app.stages["next"].topic
    decoded = app.codec.decode(child.value or b"")
    assert decoded.parent_id == received.task.id and decoded.run_id == received.task.run_id


def test_an_unreported_success_has_the_same_records_and_an_event_without_fields() -> None:
    received = job()
    assert received.task is not None
    reported = outcomes.succeeded(CONTEXT, received, received.task, {"photo": "p"}, None, 0.1,
                                  NOW)
    quiet = outcomes.succeeded(CONTEXT, received, received.task, {"photo": "p"}, None, 0.1,
                               NOW, report=False)
    assert quiet.events == [(Event.TASK_SUCCEEDED, None)]
    assert [o.topic for o in quiet.records] == [o.topic for o in reported.records] == [
        app.stages["next"].topic]


@pytest.mark.parametrize("headers", [{}, {"traceparent": TRACE, "tenant": "acme"}])
def test_a_plain_chain_resolved_once_builds_the_child_the_general_route_builds(
        headers: dict[str, str]) -> None:
    assert outcomes.chains(app) == {"work": app.stages["next"]}
    chained = outcomes.Context(app, STAGE.group, frozenset(STAGE.retry_topics), "w-1", 10_000,
                               outcomes.chains(app))
    parent = Task.new("work", {"photo": "p"}, key="user-1", headers=headers)
    received = Job((STAGE.topic, 0), 7, "user-1", parent, STAGE, PartitionOffsets(), None)
    fast = outcomes.succeeded(chained, received, parent, {"photo": "q"}, "00f067aa0ba902b7",
                              0.1, NOW)
    general = outcomes.succeeded(CONTEXT, received, parent, {"photo": "q"}, "00f067aa0ba902b7",
                                 0.1, NOW)
    [one], [other] = fast.records, general.records
    assert (one.topic, one.key, one.headers) == (other.topic, other.key, other.headers)
    child, expected = app.codec.decode(one.value), app.codec.decode(other.value)
    assert (child.type, child.payload, child.key, child.run_id, child.parent_id,
            child.headers) == (expected.type, expected.payload, expected.key,
                               expected.run_id, expected.parent_id, expected.headers)
    # several results (and no result) still take the general route
    many = outcomes.succeeded(chained, received, parent, [{"photo": "a"}, {"photo": "b"}],
                              None, 0.1, NOW)
    assert len(many.records) == 2
    assert outcomes.succeeded(chained, received, parent, None, None, 0.1, NOW).records == []


def test_an_error_with_attempts_left_goes_to_the_next_retry_level() -> None:
    received = job()
    assert received.task is not None
    outcome = outcomes.failed(CONTEXT, received, received.task, ValueError("no"), 0.1, NOW)
    assert kinds(outcome) == [Event.TASK_FAILED, Event.TASK_RETRIED]
    [retry] = outcome.records
    assert retry.topic == STAGE.retry_topic(5.0)
    assert dl.read_int(dl.find(retry.headers, dl.RETRY_ATTEMPTS)) == 2


def test_the_last_attempts_error_goes_to_the_dead_letter_queue() -> None:
    received = job(attempt=2)
    assert received.task is not None
    outcome = outcomes.failed(CONTEXT, received, received.task, ValueError("no"), 0.1, NOW)
    assert kinds(outcome) == [Event.TASK_FAILED, Event.TASK_DEAD_LETTERED]
    [letter] = outcome.records
    assert letter.topic == STAGE.dlq_topic
    assert dl.find(letter.headers, dl.REASON) == b"exhausted"


def test_a_timeout_is_reported_as_one() -> None:
    received = job()
    assert received.task is not None
    outcome = outcomes.failed(CONTEXT, received, received.task,
                              outcomes.TaskTimeout("late"), 9.0, NOW)
    assert kinds(outcome)[0] == Event.TASK_TIMED_OUT


def test_a_result_too_large_to_send_is_dead_lettered_not_retried() -> None:
    received = job()
    assert received.task is not None
    outcome = outcomes.succeeded(CONTEXT, received, received.task, {"photo": "x" * 20_000},
                                 None, 0.1, NOW)
    assert kinds(outcome) == [Event.TASK_FAILED, Event.TASK_DEAD_LETTERED]
    [letter] = outcome.records
    assert letter.topic == STAGE.dlq_topic
    assert dl.find(letter.headers, dl.REASON) == b"unproducible"


@pytest.mark.parametrize("reason", ["undecodable", "oversize"])
def test_a_poison_record_is_reported_then_dead_lettered(reason: str) -> None:
    received = job()
    received.task, received.poison = None, Poison(Event.RECORD_UNDECODABLE, reason, "bad")
    outcome = outcomes.poisoned(CONTEXT, received, NOW)
    assert kinds(outcome) == [Event.RECORD_UNDECODABLE, Event.TASK_DEAD_LETTERED]
    [letter] = outcome.records
    assert dl.find(letter.headers, dl.REASON) == f"poison:{reason}".encode()
    assert letter.value == received.message.value()
