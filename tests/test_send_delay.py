"""``Send(stage, payload, delay=s)`` from a handler: the child goes to the stage's shortest
retry level at least ``s`` long, due ``s`` from now, as a delayed send does (workflow timers
are built on it); a stage with no such level makes the result unroutable, so the task is
dead-lettered with why, not sent early. No Kafka involved."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streamtask import App, KafkaSettings, Task, clock
from streamtask.events import Event
from streamtask.kafka import headers as dl
from streamtask.model.pipeline import Send
from streamtask.retry import NO_RETRIES, RetryPolicy
from streamtask.worker import outcomes
from streamtask.worker.job import Job
from streamtask.worker.offsets import PartitionOffsets

app = App("delays", kafka=KafkaSettings("127.0.0.1:9"))
NOW = 1_700_000_000_000


@app.stage("work", partitions=1, then="held", retry=NO_RETRIES)
def work(task: Task) -> Any:
    """Never run: the tests give its results."""


@app.stage("held", partitions=1, retry=RetryPolicy(max_attempts=3, levels=(1.0, 60.0)))
def held(task: Task) -> None:
    """Has retry levels of 1 s and 1 min."""


STAGE = app.stages["work"]
CONTEXT = outcomes.Context(app, STAGE.group, frozenset(STAGE.retry_topics), "w-1", 10_000)


class Message:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def topic(self) -> str:
        return STAGE.topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 3

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, NOW)


@pytest.fixture(autouse=True)
def frozen_clock() -> Iterator[None]:
    clock.set_source(lambda: NOW * 1_000_000)
    yield
    clock.set_source(None)


def outcome(result: Any) -> outcomes.Outcome:
    task = Task.new("work", {"n": 1})
    received = Job((STAGE.topic, 0), 3, "k", task, STAGE, PartitionOffsets(),
                   Message(app.codec.encode(task)))
    return outcomes.succeeded(CONTEXT, received, task, result, None, 0.1, NOW)


@pytest.mark.parametrize(("delay", "level"), [(0.5, 1.0), (1.0, 1.0), (45.0, 60.0)])
def test_a_delayed_child_waits_on_the_shortest_level_that_is_long_enough(
        delay: float, level: float) -> None:
    [child] = outcome(Send("held", {"n": 2}, delay=delay)).records
    assert child.topic == app.stages["held"].retry_topic(level)
    due = dl.read_int(dl.find(child.headers, dl.RETRY_DUE))
    assert due == NOW + round(delay * 1000)  # due when asked, never at the level's end
    assert dl.read_int(dl.find(child.headers, dl.RETRY_ATTEMPTS)) == 1
    assert app.codec.decode(child.value or b"").payload == {"n": 2}


def test_a_delay_no_level_can_hold_dead_letters_the_task_saying_why() -> None:
    result = outcome(Send("held", {"n": 2}, delay=3600.0))
    assert [event for event, _ in result.events] == [Event.TASK_FAILED,
                                                     Event.TASK_DEAD_LETTERED]
    [letter] = result.records
    assert letter.topic == STAGE.dlq_topic
    fields = result.events[-1][1] or {}
    assert "cannot hold a task back 3600s" in fields["error"]
