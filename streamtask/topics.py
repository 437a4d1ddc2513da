"""Creating an app's topics with the shape its stages declare.

``ensure`` is idempotent: existing topics are left alone, missing ones are created, and what
cannot be fixed in place (too few partitions) is reported as drift rather than hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from streamtask import kafka
from streamtask.app import App
from streamtask.config import KafkaSettings
from streamtask.errors import KafkaError


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


@dataclass(frozen=True)
class EnsureReport:
    created: list[str]
    unchanged: list[str]
    drift: list[str]


def app_topics(app: App) -> list[TopicSpec]:
    """Every topic the app's stages read or write."""
    return [TopicSpec(stage.topic, stage.partitions, {}) for stage in app.stages.values()]


def ensure(app: App, settings: KafkaSettings | None = None, timeout: float = 30.0) -> EnsureReport:
    """Create missing topics; report ones whose shape differs from the declaration."""
    settings = settings or app.kafka
    kafka.wait_for_cluster(settings)
    client = kafka.admin(settings)
    existing = client.list_topics(timeout=timeout).topics
    wanted = app_topics(app)
    created, unchanged, drift = [], [], []
    new = [NewTopic(spec.name, spec.partitions, 1, config=spec.config)
           for spec in wanted if spec.name not in existing]
    for spec in wanted:
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            if have < spec.partitions:
                drift.append(f"{spec.name}: has {have} partitions, the stage declares "
                             f"{spec.partitions} (add them with kafka-topics --alter)")
            else:
                unchanged.append(spec.name)
    if new:
        for name, future in client.create_topics(new, operation_timeout=timeout).items():
            try:
                future.result(timeout)
            except kafka.KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise KafkaError(f"creating topic {name} failed: {exc}") from exc
            created.append(name)
    return EnsureReport(created, unchanged, drift)
