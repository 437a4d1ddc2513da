"""Creating an app's topics with the shape its stages declare.

Every stage owns its input topic, one topic per retry level and a dead-letter topic, all with
the stage's partition count (a one-partition retry topic would funnel a wide stage through
one consumer). Retry levels keep records comfortably longer than their delay; dead letters
are kept for 30 days. ``ensure`` is idempotent: it creates what is missing and reports the
drift it cannot fix in place (too few partitions, a retry topic whose retention is not longer
than its delay) instead of hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from streamtask.config import KafkaSettings
from streamtask.errors import AuthorizationFailed, KafkaError
from streamtask.kafka import clients as kafka
from streamtask.model.app import App

DLQ_RETENTION_MS = 30 * 86_400_000
EVENTS_PARTITIONS = 6
EVENTS_RETENTION_MS = 7 * 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    min_retention_ms: int | None = None
    """For a retry level: its retention must be longer than this (the delay)."""


@dataclass(frozen=True)
class EnsureReport:
    created: list[str]
    unchanged: list[str]
    drift: list[str]


def app_topics(app: App) -> list[TopicSpec]:
    """Every topic the app's stages read or write."""
    specs = []
    for stage in app.stages.values():
        specs.append(TopicSpec(stage.topic, stage.partitions))
        retention = str(round(stage.retry.topic_retention() * 1000))
        for topic, delay in stage.retry_topics.items():
            specs.append(TopicSpec(topic, stage.partitions, {"retention.ms": retention},
                                   round(delay * 1000)))
        specs.append(TopicSpec(stage.dlq_topic, stage.partitions,
                               {"retention.ms": str(DLQ_RETENTION_MS)}))
        if stage.join is not None:
            specs.append(TopicSpec(stage.changelog_topic, stage.partitions,
                                   {"cleanup.policy": "compact"}))
    return specs


def events_topic(app: App) -> TopicSpec:
    """The app's execution trail (:mod:`streamtask.ops.trail`): ``ensure`` creates it with the
    rest (the trail is on by default, and a worker on a secured cluster may not create
    topics); a worker that finds it missing creates it itself when it may."""
    return TopicSpec(f"{app.name}.events", EVENTS_PARTITIONS,
                     {"retention.ms": str(EVENTS_RETENTION_MS)})


def ensure(app: App, settings: KafkaSettings | None = None, timeout: float = 30.0) -> EnsureReport:
    """Create missing topics; report ones whose shape differs from the declaration."""
    settings = settings or app.kafka
    kafka.wait_for_cluster(settings)
    client = kafka.admin(settings)
    metadata = client.list_topics(timeout=timeout)
    existing = metadata.topics
    wanted = [*app_topics(app), events_topic(app)]
    present = [spec for spec in wanted if spec.name in existing]
    drift = [line for spec in present
             for line in _partition_drift(spec, len(existing[spec.name].partitions))]
    drift += _retention_drift(client, [s for s in present if s.min_retention_ms], timeout,
                              settings)
    drifted = {line.split(":", 1)[0] for line in drift}
    unchanged = [spec.name for spec in present if spec.name not in drifted]
    created = _create(client, [spec for spec in wanted if spec.name not in existing], timeout,
                      settings, len(metadata.brokers))
    return EnsureReport(created, unchanged, drift)


def _partition_drift(spec: TopicSpec, have: int) -> list[str]:
    if have >= spec.partitions:
        return []
    return [f"{spec.name}: has {have} partitions, the stage declares {spec.partitions} "
            "(add them with kafka-topics --alter --partitions)"]


def _retention_drift(client: AdminClient, specs: list[TopicSpec], timeout: float,
                     settings: KafkaSettings) -> list[str]:
    if not specs:
        return []
    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in specs]
    found = []
    futures = client.describe_configs(resources).values()
    for spec, future in zip(specs, futures, strict=True):
        try:
            entry = future.result(timeout).get("retention.ms")
        except kafka.KafkaException as exc:
            if "AUTHORIZATION_FAILED" not in str(exc):
                raise
            raise AuthorizationFailed(kafka.denied(
                settings, "DescribeConfigs", "topic", spec.name)) from None
        retention = int(entry.value) if entry is not None and entry.value else -1
        if spec.min_retention_ms is not None and 0 <= retention <= spec.min_retention_ms:
            found.append(f"{spec.name}: retention.ms={retention} is not longer than its delay "
                         f"of {spec.min_retention_ms} ms, so retried tasks could expire unseen "
                         f"(raise it to {spec.config['retention.ms']})")
    return found


def replication_for(brokers: int) -> tuple[int, dict[str, str]]:
    """Replication factor and topic settings for a cluster of ``brokers``: three copies
    where there are three brokers or more, with ``min.insync.replicas=2`` so an
    acknowledged record survives the loss of any one broker while one broker may be down
    without stopping writes; fewer brokers get one copy per broker."""
    factor = max(1, min(3, brokers))
    return factor, ({"min.insync.replicas": "2"} if factor >= 3 else {})


def _create(client: AdminClient, specs: list[TopicSpec], timeout: float,
            settings: KafkaSettings | None = None, brokers: int | None = None) -> list[str]:
    """Create ``specs`` replicated for the cluster's size (``brokers``, else asked)."""
    if not specs:
        return []
    if brokers is None:
        brokers = len(client.list_topics(timeout=timeout).brokers)
    factor, replicated = replication_for(brokers)
    new = [NewTopic(spec.name, spec.partitions, factor, config={**replicated, **spec.config})
           for spec in specs]
    created, denied = [], []
    for name, future in client.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except kafka.KafkaException as exc:
            if "AUTHORIZATION_FAILED" in str(exc):
                denied.append(name)
                continue
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise KafkaError(f"creating topic {name} failed: {exc}") from exc
        created.append(name)
    if denied:
        raise AuthorizationFailed(_create_denied(denied, settings))
    return created


def _create_denied(names: list[str], settings: KafkaSettings | None) -> str:
    """What to ask the admin for when topics may not be created (one line): Create on the
    app's prefix, since every topic of an app starts with ``<app>.``."""
    prefix = names[0].split(".", 1)[0] + "."
    return (f"not allowed to create topic(s) {', '.join(names)}: "
            + kafka.denied(settings, "Create", "topic", prefix)
            + " --resource-pattern-type prefixed (or ask an operator with Create rights to "
              "run `streamtask topics ensure`)")
