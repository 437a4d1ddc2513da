"""Sending tasks from services.

``send`` encodes and hands the record to librdkafka's queue, so it returns in microseconds;
the broker's acknowledgement arrives later. Every send returns a future that resolves on
acknowledgement or fails with :class:`~streamtask.errors.DeliveryFailed`, and failures are
also latched and raised by the next :meth:`TaskProducer.flush`, so none goes unnoticed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from streamtask import deadletter as dl
from streamtask import kafka
from streamtask.envelope import Task
from streamtask.errors import ConfigurationError, DeliveryFailed

if TYPE_CHECKING:
    from streamtask.app import App


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where an acknowledged task was written."""

    task_id: str
    topic: str
    partition: int
    offset: int


class TaskProducer:
    """An idempotent, ``acks=all`` producer of one app's tasks."""

    def __init__(self, app: App, **librdkafka: Any) -> None:
        self._app = app
        self._codec = app.codec
        self._producer = kafka.producer(app.kafka, **librdkafka)
        self._failures: list[DeliveryFailed] = []

    def send(self, stage: str, payload: Any, *, key: str | None = None,
             task_id: str | None = None, run_id: str | None = None,
             parent_id: str | None = None,
             headers: Mapping[str, str] | None = None, delay: float | None = None,
             not_before: int | None = None) -> Future[Delivered]:
        """Encode a task for ``stage`` and queue it; the payload is checked against its schema.

        The partition key is ``key`` when given, else the task id, so tasks of one key stay
        in order on one partition. ``delay`` (seconds) or ``not_before`` (epoch ms) makes
        the task wait: see :meth:`send_later`.
        """
        task = Task.new(stage, payload, key=key, id=task_id, run_id=run_id,
                        parent_id=parent_id, headers=headers)
        if self._app.version is not None:
            task = task.with_(pipeline_version=self._app.version)
        if delay is not None or not_before is not None:
            due = not_before if not_before is not None else \
                time.time_ns() // 1_000_000 + round(max(delay or 0.0, 0.0) * 1000)
            return self.send_later(task, due)
        return self.send_task(task)

    def send_later(self, task: Task, due_ms: int) -> Future[Delivered]:
        """Queue a task that must not run before ``due_ms`` (epoch ms).

        It goes to the stage's shortest retry level at least as long as the wait, with the
        retry headers saying its attempt and due time, so the retries' due-time machinery
        serves it: no partition sleeps, and the task runs once due. A level holds its
        records in order, so the task may run up to (level - wait) late behind earlier
        records of that level; it never runs early. A due time already past sends the task
        straight to the stage.
        """
        stage = self._app.get_stage(task.type)
        wait = (due_ms - time.time_ns() // 1_000_000) / 1000
        if wait <= 0:
            return self.send_task(task)
        levels = stage.retry.ladder()
        level = next((d for d in levels if d >= wait), None)
        if level is None:
            longest = f"its longest retry level is {levels[-1]:g}s" if levels else \
                "it has no retry levels"
            raise ConfigurationError(
                f"stage {stage.name!r}: cannot delay a task {wait:g}s, {longest}; give it a "
                "retry level at least that long (RetryPolicy(levels=...))")
        headers: list[tuple[str, str | bytes | None]] = [
            (dl.RETRY_ATTEMPTS, dl.int32(task.attempt)), (dl.RETRY_DUE, dl.int64(due_ms))]
        future: Future[Delivered] = Future()
        self._produce(stage.retry_topic(level), self._codec.encode(task), task, future, headers)
        return future

    def send_task(self, task: Task, topic: str | None = None) -> Future[Delivered]:
        """Queue an already built task (to its stage's topic unless ``topic`` is given)."""
        topic = topic or self._app.get_stage(task.type).topic
        value = self._codec.encode(task)
        future: Future[Delivered] = Future()
        self._produce(topic, value, task, future)
        return future

    def send_many(self, stage: str, payloads: Iterable[Any], *,
                  key: Any = None) -> list[Future[Delivered]]:
        """Queue many tasks for one stage; ``key`` may be a function of the payload."""
        futures = []
        for payload in payloads:
            task_key = key(payload) if callable(key) else key
            futures.append(self.send(stage, payload, key=task_key))
        return futures

    def _produce(self, topic: str, value: bytes, task: Task, future: Future[Delivered],
                 headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        key = task.key if task.key is not None else task.id

        def acknowledged(error: Any, message: Any) -> None:
            if error is not None:
                failure = kafka.delivery_error(error, topic)
                self._failures.append(failure)
                future.set_exception(failure)
            else:
                future.set_result(Delivered(task.id, topic, message.partition(),
                                            message.offset()))

        while True:
            try:
                if headers:
                    self._producer.produce(topic, value, key, headers=headers,
                                           on_delivery=acknowledged)
                else:
                    self._producer.produce(topic, value, key, on_delivery=acknowledged)
                break
            except BufferError:  # local queue full: serve callbacks and let it drain
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued task is acknowledged; raise the first delivery failure."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            left = self._producer.flush(remaining)
            if left == 0 or (deadline is not None and time.monotonic() >= deadline):
                break
        if self._failures:
            first, count = self._failures[0], len(self._failures)
            self._failures.clear()
            raise DeliveryFailed(f"{count} task(s) were not delivered; first: {first}")
        if left:
            raise DeliveryFailed(f"{left} task(s) still unacknowledged after {timeout}s")

    def close(self, timeout: float | None = 30.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> TaskProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.flush(5.0)
