"""Apps and stages: what work exists, where its tasks live, how it runs.

An :class:`App` is a namespace (``photos``) whose stages (``resize``) each own an input topic
(``photos.resize``) and a consumer group. Definitions are validated when declared, so a bad
one fails at import time with a message that says how to fix it, not in production.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamtask.config import KafkaSettings, load_kafka_settings
from streamtask.errors import ConfigurationError
from streamtask.kafka.clients import KAFKA, Transport
from streamtask.kafka.producer import TaskProducer
from streamtask.model.envelope import EnvelopeCodec, Task
from streamtask.model.pipeline import JoinSpec, Switch, Then, targets_of
from streamtask.model.registry import Schema, SchemaRegistry, default_registry
from streamtask.retry import RetryPolicy, level_name
from streamtask.worker.ratelimit import RateLimit

Handler = Callable[[Task], Any]
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Stage:
    """One kind of work: a handler, its input topic and group, and how it runs."""

    app: str
    name: str
    handler: Handler
    topic: str
    group: str
    partitions: int
    concurrency: int | None
    timeout: float | None
    payload: Schema | None
    then: Then
    is_async: bool
    retry: RetryPolicy
    max_payload_bytes: int
    compensate: str | None = None
    """The stage that receives this stage's tasks when they are dead-lettered (saga)."""
    output: Schema | None = None
    """The schema of the handler's results, when declared (``pipeline check`` uses it)."""
    join: JoinSpec | None = None
    """Set on a join stage: which branches it waits for, and for how long."""
    exactly_once: bool = False
    """Outputs and input offsets commit in one Kafka transaction (see README)."""
    rate_limit: RateLimit | None = None
    """At most this many task starts per window across all workers (see ``ratelimit``)."""

    @property
    def qualified(self) -> str:
        return f"{self.app}.{self.name}"

    def retry_topic(self, delay: float) -> str:
        """The retry level topic for ``delay`` seconds, named by its delay."""
        return f"{self.qualified}.retry.{level_name(delay)}"

    @property
    def retry_topics(self) -> dict[str, float]:
        """Every retry level of the stage: topic -> delay in seconds."""
        return {self.retry_topic(delay): delay for delay in self.retry.ladder()}

    @property
    def dlq_topic(self) -> str:
        return f"{self.qualified}.dlq"

    @property
    def changelog_topic(self) -> str:
        """A join's compacted changelog of waiting forks (co-partitioned with its input)."""
        return f"{self.qualified}.changelog"


def _check_name(kind: str, value: str) -> None:
    if not _NAME.match(value):
        raise ConfigurationError(
            f"{kind} name {value!r} is not valid: use 1-100 letters, digits, '_' or '-' "
            "(dots separate app, stage and retry level in topic names)")


def _check_stage_options(name: str, partitions: int, concurrency: int | None,
                         timeout: float | None, max_payload_bytes: int) -> None:
    if max_payload_bytes < 1:
        raise ConfigurationError(f"stage {name!r}: max_payload_bytes must be positive")
    if not 1 <= partitions <= 10_000:
        raise ConfigurationError(
            f"stage {name!r}: partitions={partitions} is out of range; give 1 to 10000")
    if concurrency is not None and concurrency < 1:
        raise ConfigurationError(
            f"stage {name!r}: concurrency={concurrency} must be at least 1 (or None to use "
            "the worker's --concurrency)")
    if timeout is not None and timeout <= 0:
        raise ConfigurationError(
            f"stage {name!r}: timeout={timeout} must be a positive number of seconds, "
            "or None for no limit")


class App:
    """A namespace of stages sharing a schema registry and Kafka settings.

    Without ``kafka=``, the settings come from the deployment's configuration (see
    :func:`streamtask.config.load_kafka_settings`).
    """

    def __init__(self, name: str, *, kafka: KafkaSettings | None = None,
                 schema_dir: str | Path | None = None, version: int | None = None) -> None:
        _check_name("app", name)
        if version is not None and version < 1:
            raise ConfigurationError(f"app {name!r}: version must be 1 or more, not {version}")
        self.name = name
        self.version = version
        """The pipeline version new runs are created under; tasks keep theirs to the end."""
        self.kafka = kafka or load_kafka_settings()
        """Explicit settings, else the deployment's (``STREAMTASK_*`` variables and
        ``streamtask.toml``, as the CLI reads them), so ``app.send`` in a service connects
        where ``streamtask worker`` does."""
        self.registry: SchemaRegistry = default_registry()
        if schema_dir is not None:
            self.registry.load_dir(Path(schema_dir))
        self.stages: dict[str, Stage] = {}
        self._codec: EnvelopeCodec | None = None
        self._producer: TaskProducer | None = None
        self.transport: Transport = KAFKA
        """Where this app's workers and producer open Kafka clients (replaced by
        :mod:`streamtask.testing` with an in-memory log)."""

    def stage(self, name: str, *, payload: Schema | Mapping[str, Any] | str | None = None,
              topic: str | None = None, group: str | None = None, partitions: int = 6,
              concurrency: int | None = None, timeout: float | None = DEFAULT_TIMEOUT,
              then: str | Sequence[str] | Switch | None = None,
              retry: RetryPolicy | None = None, max_payload_bytes: int = 1_000_000,
              compensate: str | None = None,
              output: Schema | Mapping[str, Any] | str | None = None,
              join: JoinSpec | None = None,
              exactly_once: bool = False,
              rate_limit: RateLimit | float | None = None) -> Callable[[Handler], Handler]:
        """Declare a stage; decorates its handler (a plain or ``async`` function of a Task).

        ``payload`` is the task's Avro schema: a name from ``schemas/``, a schema dict, or
        None for free-form JSON. ``then`` says where results go: a stage (chain), several
        stages (fork), or a :class:`~streamtask.model.pipeline.Switch` (see
        :mod:`streamtask.model.pipeline`). ``retry`` is the stage's retry ladder (default: 3
        attempts, exponential from 1 s); records larger than ``max_payload_bytes`` go to the
        dead-letter queue unread. ``compensate`` names a stage that receives this stage's
        tasks when they are dead-lettered (saga style). ``exactly_once`` commits the stage's
        outputs and input offsets in one Kafka transaction. ``rate_limit`` caps the stage's
        task starts across every worker (a :class:`~streamtask.worker.ratelimit.RateLimit`, or
        tasks per second), each worker taking its partitions' share.
        """
        _check_name("stage", name)
        _check_stage_options(name, partitions, concurrency, timeout, max_payload_bytes)
        if name in self.stages:
            raise ConfigurationError(f"stage {name!r} is declared twice in app {self.name!r}")
        topic = topic or f"{self.name}.{name}"
        if not _TOPIC.match(topic):
            raise ConfigurationError(f"stage {name!r}: topic {topic!r} is not a valid Kafka "
                                     "topic name (letters, digits, '.', '_', '-')")
        schema = self._resolve_schema(name, payload)
        output_schema = self._resolve_schema(name, output)

        def register(handler: Handler) -> Handler:
            if not callable(handler):
                raise ConfigurationError(f"stage {name!r}: the handler must be callable")
            self.stages[name] = Stage(
                app=self.name, name=name, handler=handler, topic=topic,
                group=group or f"{self.name}.{name}", partitions=partitions,
                concurrency=concurrency, timeout=timeout, payload=schema,
                then=then if then is None or isinstance(then, str | Switch) else tuple(then),
                is_async=inspect.iscoroutinefunction(handler), retry=retry or RetryPolicy(),
                max_payload_bytes=max_payload_bytes, compensate=compensate,
                output=output_schema, join=join, exactly_once=exactly_once,
                rate_limit=RateLimit(rate_limit) if isinstance(rate_limit, int | float)
                else rate_limit)
            self._codec = None
            return handler

        return register

    def join(self, name: str, *, branches: Sequence[str], then: str | Sequence[str] | None = None,
             timeout: float = 300.0, on_timeout: str = "dead-letter", partitions: int = 6,
             **options: Any) -> Callable[[Handler], Handler]:
        """Declare a join: it waits for one result from every branch of the same fork.

        Its handler gets a task whose payload maps each branch stage's name to that branch's
        result (use :func:`streamtask.model.pipeline.merged` to pass it on unchanged). After
        ``timeout`` seconds without all branches, ``on_timeout`` either dead-letters the fork
        (``"dead-letter"``) or runs the handler on the partial results (``"partial"``).
        """
        spec = JoinSpec(tuple(branches), timeout, on_timeout)
        return self.stage(name, then=then, partitions=partitions, join=spec, **options)

    def _resolve_schema(self, stage: str,
                        payload: Schema | Mapping[str, Any] | str | None) -> Schema | None:
        if payload is None or isinstance(payload, Schema):
            return payload
        if isinstance(payload, str):
            return self.registry.get(payload)
        if isinstance(payload, Mapping):
            return self.registry.register(dict(payload))
        raise ConfigurationError(
            f"stage {stage!r}: payload must be a schema name, an Avro schema dict or None, "
            f"not {type(payload).__name__}")

    def get_stage(self, name: str) -> Stage:
        try:
            return self.stages[name]
        except KeyError:
            known = ", ".join(sorted(self.stages)) or "none"
            raise ConfigurationError(
                f"app {self.name!r} has no stage {name!r} (stages: {known})") from None

    def validate(self) -> None:
        """Check cross-stage references; called before workers start."""
        for stage in self.stages.values():
            for target in targets_of(stage.then):
                if target not in self.stages:
                    raise ConfigurationError(
                        f"stage {stage.name!r} sends its results to {target!r}, which is not "
                        f"a stage of app {self.name!r}; declare it or fix `then=`")
            for branch in stage.join.branches if stage.join else ():
                if branch not in self.stages:
                    raise ConfigurationError(
                        f"join {stage.name!r} waits for branch {branch!r}, which is not a stage "
                        f"of app {self.name!r}")
            if stage.compensate is not None and stage.compensate not in self.stages:
                raise ConfigurationError(
                    f"stage {stage.name!r} is compensated by {stage.compensate!r}, which is "
                    f"not a stage of app {self.name!r}")

    @property
    def codec(self) -> EnvelopeCodec:
        """The envelope codec knowing every stage's payload schema (built once)."""
        if self._codec is None:
            schemas = {s.name: s.payload for s in self.stages.values() if s.payload is not None}
            self._codec = EnvelopeCodec(self.registry, schemas)
        return self._codec

    def producer(self) -> TaskProducer:
        """A new producer for this app's stages (the caller closes it)."""
        return TaskProducer(self)

    def send(self, stage: str, payload: Any, *, key: str | None = None,
             task_id: str | None = None, headers: Mapping[str, str] | None = None,
             delay: float | None = None, not_before: int | None = None) -> Any:
        """Send one task through the app's shared producer; see :meth:`TaskProducer.send`
        (``delay`` seconds or ``not_before`` epoch ms hold it back)."""
        if self._producer is None:
            self._producer = self.producer()
        return self._producer.send(stage, payload, key=key, task_id=task_id, headers=headers,
                                   delay=delay, not_before=not_before)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every task sent with :meth:`send` is acknowledged (or raise)."""
        if self._producer is not None:
            self._producer.flush(timeout)

    def __repr__(self) -> str:
        return f"App({self.name!r}, stages={list(self.stages)})"
