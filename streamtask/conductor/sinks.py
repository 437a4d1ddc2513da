"""EVENT: publish the task's input to a Kafka topic, as Conductor's ``sink: "kafka:<topic>"``.

The published value is the task's resolved input plus ``workflowInstanceId``,
``workflowType``, ``workflowVersion`` and ``correlationId`` (JSON, keyed by the run id, so a
run's events stay in order); the task's output is that payload plus ``event_produced`` (the
sink), as in Conductor. The task completes once the broker acknowledged the record; a record
the broker refuses, or does not acknowledge within :data:`PUBLISH_TIMEOUT`, fails the task,
which is retried as its task definition says (no retries by default, as for every system
task), and then dead-lettered with the reason. A retried EVENT publishes again: consumers of
the sink see each event at least once.

Other sinks (``conductor``, ``sqs:``, ``nats:``, ``amqp:``) have no counterpart here: a
literal one is refused at load; one given by an expression dead-letters the run when it
resolves to one. The topic is not created: it must exist (``auto.create.topics.enable`` is
usually off).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import orjson

from streamtask.conductor.context import Body, Workflow
from streamtask.conductor.expressions import resolve
from streamtask.errors import ConfigurationError, StreamtaskError
from streamtask.kafka import clients as kafka
from streamtask.model.app import App
from streamtask.model.envelope import Task
from streamtask.retry import DeadLetter

KAFKA = "kafka:"
PUBLISH_TIMEOUT = 30.0
"""Seconds an EVENT waits for the broker to acknowledge its record."""
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class EventNotPublished(StreamtaskError):
    """The broker refused an EVENT's record, or did not acknowledge it in time."""


def topic_of(sink: Any) -> str:
    """The topic of a ``kafka:<topic>`` sink; any other sink is a ConfigurationError."""
    if not isinstance(sink, str) or not sink.startswith(KAFKA):
        raise ConfigurationError(f"sink {sink!r} is not supported: give kafka:<topic> (other "
                                 "Conductor sinks have no counterpart here)")
    topic = sink[len(KAFKA):]
    if not _TOPIC.match(topic):
        raise ConfigurationError(f"sink {sink!r}: {topic!r} is not a Kafka topic name "
                                 "(1-249 letters, digits, '.', '_' or '-')")
    return topic


def publisher(sink: str, workflow: Workflow) -> Callable[[App], Body]:
    """The EVENT body, made for its app when the stage is declared (it publishes through
    the app's transport and settings)."""
    def made(app: App) -> Body:
        producer: list[Any] = []
        lock = threading.Lock()

        def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
            document = {**ctx["tasks"], "workflow": {**ctx["workflow"],
                                                    "workflowId": task.run_id}}
            resolved = resolve(sink, document, task.id)
            try:
                topic = topic_of(resolved)
            except ConfigurationError as exc:
                raise DeadLetter(f"EVENT: {exc}") from exc
            payload = {**(inputs if isinstance(inputs, dict) else {}),
                       "workflowInstanceId": task.run_id, "workflowType": workflow.name,
                       "workflowVersion": workflow.version,
                       "correlationId": ctx["workflow"].get("correlationId")}
            with lock:
                if not producer:
                    producer.append(app.transport.producer(app.kafka))
                _publish(producer[0], topic, task.run_id, payload)
            return {**payload, "event_produced": resolved}
        return run
    return made


def _publish(producer: Any, topic: str, key: str, payload: dict[str, Any]) -> None:
    """Produce one record and wait for the broker's answer."""
    answers: list[Any] = []
    kafka.produce(producer, topic, orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS), key,
                  on_delivery=lambda error, _message: answers.append(error))
    producer.flush(PUBLISH_TIMEOUT)
    if not answers:
        raise EventNotPublished(f"EVENT: the broker did not acknowledge the record for "
                                f"{topic!r} within {PUBLISH_TIMEOUT:g}s")
    if answers[0] is not None:
        raise EventNotPublished(f"EVENT: publishing to {topic!r} failed: {answers[0].str()}")
