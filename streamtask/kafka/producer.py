"""Sending tasks from services.

``send`` encodes and hands the record to librdkafka's queue, so it returns in microseconds;
the broker's acknowledgement arrives later. Every send returns a future that resolves on
acknowledgement or fails with :class:`~streamtask.errors.DeliveryFailed`, and failures are
also latched and raised by the next :meth:`TaskProducer.flush`, so none goes unnoticed.

A producer checks at creation that the cluster answers, and ``flush`` re-checks whenever
librdkafka reports the brokers down: with no broker (or refused credentials) the service gets
:class:`~streamtask.errors.BrokerUnavailable` (or ``AuthenticationFailed``) after the
settings' ``connect_timeout``, not after librdkafka's five-minute message timeout, which is
kept so that records queued during a broker restart are still delivered.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from streamtask import clock
from streamtask.config import KafkaSettings
from streamtask.errors import ConfigurationError, DeliveryFailed, ProduceRejected
from streamtask.kafka import clients as kafka
from streamtask.kafka import headers as dl
from streamtask.kafka.clients import Transport
from streamtask.model.envelope import EnvelopeCodec, Task
from streamtask.ops import tracing
from streamtask.retry import RetryPolicy


class ProducedStage(Protocol):
    """What a producer reads of a stage (an :class:`~streamtask.model.app.Stage` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def retry(self) -> RetryPolicy: ...
    def retry_topic(self, delay: float) -> str: ...


class ProducingApp(Protocol):
    """What a producer needs of its app. :class:`~streamtask.model.app.App` has it; a Protocol so
    that this module never imports ``app``, which imports it for :meth:`App.send`."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int | None: ...
    @property
    def kafka(self) -> KafkaSettings: ...
    @property
    def codec(self) -> EnvelopeCodec: ...
    @property
    def transport(self) -> Transport: ...
    @property
    def stages(self) -> Mapping[str, ProducedStage]: ...
    def get_stage(self, name: str) -> ProducedStage: ...


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where an acknowledged task was written."""

    task_id: str
    topic: str
    partition: int
    offset: int


class TaskProducer:
    """An idempotent, ``acks=all`` producer of one app's tasks."""

    def __init__(self, app: ProducingApp, **librdkafka: Any) -> None:
        self._app = app
        self._codec = app.codec
        self._errors = kafka.ClientErrors()
        self._producer = app.transport.producer(app.kafka, error_cb=self._errors, **librdkafka)
        self._failures: list[DeliveryFailed] = []
        self._undelivered: list[tuple[Any, str, Future[Delivered]]] = []
        kafka.check_reachable(self._producer, self._errors, app.kafka)
        self._errors.errors.clear()

    def send(self, stage: str, payload: Any, *, key: str | None = None,
             task_id: str | None = None, run_id: str | None = None,
             parent_id: str | None = None,
             headers: Mapping[str, str] | None = None, delay: float | None = None,
             not_before: int | None = None) -> Future[Delivered]:
        """Encode a task for ``stage`` and queue it; the payload is checked against its schema.

        The partition key is ``key`` when given, else the task id, so tasks of one key stay
        in order on one partition. The task carries W3C trace context: a ``traceparent`` in
        ``headers``, else the current OpenTelemetry span's, else a new trace's. ``delay``
        (seconds) or ``not_before`` (epoch ms) makes the task wait: see :meth:`send_later`.
        A task librdkafka refuses outright (larger than ``message.max.bytes``) raises
        :class:`~streamtask.errors.ProduceRejected`.
        """
        task = Task.new(stage, payload, key=key, id=task_id, run_id=run_id,
                        parent_id=parent_id, headers=tracing.outgoing(headers))
        if self._app.version is not None:
            task = task.with_(pipeline_version=self._app.version)
        if delay is not None or not_before is not None:
            due = not_before if not_before is not None else \
                clock.now_ms() + round(max(delay or 0.0, 0.0) * 1000)
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
        wait = (due_ms - clock.now_ms()) / 1000
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
                # Only a list append here: after a fatal client error this callback runs with
                # the error pending, and the first call into C must re-raise it intact (see
                # ``kafka.producer_failure``); the failure is settled after the poll.
                self._undelivered.append((error, topic, future))
            else:
                future.set_result(Delivered(task.id, topic, message.partition(),
                                            message.offset()))

        try:
            kafka.produce(self._producer, topic, value, key, headers=headers,
                          on_delivery=acknowledged,
                          serve=lambda wait: self._serve(self._producer.poll, wait, topic))
        except ProduceRejected as refused:
            if refused.about_record or refused.__cause__ is None:
                raise
            raise kafka.producer_failure(refused.__cause__, self._app.kafka,
                                         topic) or refused from None
        self._serve(self._producer.poll, 0, topic)

    def _serve(self, call: Any, timeout: float, topic: str) -> int:
        """``poll``/``flush`` with a fatal client error mapped into streamtask's own."""
        try:
            served: int = call(timeout)
        except (SystemError, kafka.KafkaException) as exc:
            failure = kafka.producer_failure(exc, self._app.kafka, topic)
            if failure is None:
                raise
            raise failure from None
        while self._undelivered:
            error, failed_topic, future = self._undelivered.pop()
            delivery = kafka.delivery_error(error, failed_topic, self._app.kafka)
            self._failures.append(delivery)
            future.set_exception(delivery)
        return served

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued task is acknowledged; raise the first delivery failure."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            left = self._serve(self._producer.flush, remaining, self._some_topic())
            if left == 0 or (deadline is not None and time.monotonic() >= deadline):
                break
            self._recheck_cluster()
        if self._failures:
            first, count = self._failures[0], len(self._failures)
            self._failures.clear()
            raise DeliveryFailed(f"{count} task(s) were not delivered; first: {first}")
        if left:
            raise DeliveryFailed(f"{left} task(s) still unacknowledged after {timeout}s")

    def _some_topic(self) -> str:
        stages = list(self._app.stages.values())
        return stages[0].topic if stages else f"{self._app.name}.<stage>"

    def _recheck_cluster(self) -> None:
        """Raise instead of waiting on when the cluster went away or refuses us; a broker
        that answers again within the connect timeout lets the flush go on."""
        if not self._errors.errors:
            return
        try:
            kafka.check_reachable(self._producer, self._errors, self._app.kafka)
        finally:
            self._errors.errors.clear()

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
