"""What each stage of an app is doing, read from the broker alone (``streamtask status``).

Everything here comes from Kafka: watermarks, the committed offsets of each stage's two
consumer groups (inputs, and ``<group>.retry`` for retry levels), group membership, and the
due-time headers of waiting retry records. Nothing joins a group or commits.

A stage's verdict needs movement, which one look cannot show, so a status is two samples
``window`` seconds apart: a stage is *stuck* when it has work (input lag, or retry records
already due) and workers, yet no committed offset of its groups moved in between.

A retry level lags by design: its records wait for their due time. The worker takes a level's
partition in offset order and holds the records behind one that is not due yet
(:mod:`streamtask.worker.delays`), so the records *due now* are those before the first record whose
due time is still ahead, found by a binary search on the due headers (each probe reads one
record per partition; a level's records are produced in due-time order, one fixed delay each).

A join stage also reports its *pending forks*: the forks whose latest changelog record is a
waiting state, not a tombstone (the fork joined or timed out). That takes a full read of
the join's compacted changelog up to the end offsets of when the read starts, every
partition, so it is done once per verdict (the second look), and only for join stages.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import admin as kafka_admin

from streamtask.errors import ConfigurationError
from streamtask.kafka import clients as kafka
from streamtask.model.app import App, Stage
from streamtask.worker import outcomes
from streamtask.worker.job import TopicPartition

OffsetSpec: Any = kafka_admin.OffsetSpec  # type: ignore[attr-defined]  # re-exported, untyped
HOUR_MS = 3_600_000
PROBE_SECONDS = 10.0
"""How long one binary-search probe waits for a retry record before giving up on it."""


class Verdict(StrEnum):
    HEALTHY = "healthy"
    BACKLOG_GROWING = "backlog growing"
    STUCK = "stuck"
    NO_WORKERS = "no workers"


@dataclass(frozen=True)
class Member:
    """One consumer of a stage's group: who it is and which partitions it holds."""

    group: str
    member_id: str
    client_id: str
    host: str
    partitions: list[str]


@dataclass(frozen=True)
class RetryLevel:
    topic: str
    delay: float
    due_now: int
    """Records whose due time has come (real backlog)."""
    waiting: int
    """Records waiting for their due time (lag by design)."""


@dataclass(frozen=True)
class Sample:
    """One look at a stage: committed positions and what is still ahead of them."""

    at: float
    committed: dict[str, int]
    """Committed offset per ``topic[partition]`` of the stage's input and retry levels."""
    lag: dict[int, int]
    """Input partition -> records after its committed offset."""
    retry: list[RetryLevel]
    dlq_size: int
    dlq_last_hour: int
    members: list[Member]
    pending_forks: int | None = None
    """Forks a join stage waits on (None: not a join, or not read in this look)."""

    @property
    def backlog(self) -> int:
        """Work that could run now: input lag plus retry records already due."""
        return sum(self.lag.values()) + sum(level.due_now for level in self.retry)


@dataclass(frozen=True)
class StageStatus:
    stage: str
    topic: str
    lag: int
    worst_partition: int | None
    worst_lag: int
    retry: list[RetryLevel]
    dlq_size: int
    dlq_last_hour: int
    members: list[Member]
    committed_per_second: float
    """Offsets the stage's groups committed per second over the window."""
    verdict: Verdict
    reason: str
    pending_forks: int | None = None
    """Forks whose latest changelog record is not a tombstone (None: not a join stage)."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


def judge(before: Sample, after: Sample) -> tuple[Verdict, str]:
    """The verdict on a stage from two samples (a pure function, tested from a table)."""
    seconds = max(after.at - before.at, 0.001)
    moved = after.committed != before.committed
    if not after.members:
        if after.backlog:
            return Verdict.NO_WORKERS, f"{after.backlog} task(s) waiting and no worker consumes"
        return Verdict.NO_WORKERS, "nothing waiting, but no worker consumes"
    if after.backlog and before.backlog and not moved:
        return Verdict.STUCK, (f"{after.backlog} task(s) waiting and no committed offset moved "
                               f"for {seconds:.0f}s")
    if after.backlog > before.backlog:
        return Verdict.BACKLOG_GROWING, (f"backlog {before.backlog} -> {after.backlog} in "
                                         f"{seconds:.0f}s")
    return Verdict.HEALTHY, f"backlog {after.backlog}"


def is_failing(status: StageStatus) -> bool:
    """Stuck, or without workers while tasks wait: what makes ``status`` exit non-zero."""
    return status.verdict is Verdict.STUCK or (
        status.verdict is Verdict.NO_WORKERS and status.lag + sum(
            level.due_now for level in status.retry) > 0)


class Inspector:
    """Reads samples of an app's stages; keep one for repeated looks (``--watch``)."""

    def __init__(self, app: App, stages: Sequence[Stage]) -> None:
        self.app = app
        self.stages = stages
        self._partitions: dict[str, int] = {}
        kafka.wait_for_cluster(self.app.kafka)
        self._admin = kafka.admin(self.app.kafka)
        self._reader = kafka.consumer(
            self.app.kafka, f"{self.app.name}.status-{socket.gethostname()}",
            **{"max.partition.fetch.bytes": 65_536, "fetch.max.bytes": 1_048_576,
               "queued.min.messages": 10})

    def close(self) -> None:
        self._reader.close()

    def sample(self, forks: bool = False) -> dict[str, Sample]:
        """One look at every stage; with ``forks``, also count each join's pending forks
        (a full read of its changelog: ask for it once per verdict, not every look)."""
        timeout = self.app.kafka.connect_timeout
        try:
            topics = self._admin.list_topics(timeout=timeout).topics
        except kafka.KafkaException as exc:
            raise kafka.mapped(exc, "listing topics failed") from exc
        self._partitions = {name: len(meta.partitions) for name, meta in topics.items()}
        now_ms = time.time_ns() // 1_000_000
        tps = [(topic, p) for stage in self.stages for topic in self._topics(stage)
               for p in range(self._partitions.get(topic, 0))]
        highs = self._list_offsets({tp: OffsetSpec.latest() for tp in tps})
        lows = self._list_offsets({tp: OffsetSpec.earliest() for tp in tps})
        hour_ago = self._list_offsets({tp: OffsetSpec.for_timestamp(now_ms - HOUR_MS)
                                       for tp in tps if tp[0].endswith(".dlq")})
        members = self._members(self.stages)
        return {stage.name: replace(
                    self._stage_sample(stage, highs, lows, hour_ago, members, now_ms),
                    pending_forks=self._pending_forks(stage) if forks else None)
                for stage in self.stages}

    def _pending_forks(self, stage: Stage) -> int | None:
        """Fork keys whose latest changelog record is a waiting state, not a tombstone
        (a fork that joined or timed out); each partition read to its end as of the read."""
        if stage.join is None:
            return None
        waiting: dict[tuple[int, str], bool] = {}
        for partition in range(self._partitions.get(stage.changelog_topic, 0)):
            for key, value in kafka.read_partition(self.app.kafka, stage.changelog_topic,
                                                   partition):
                waiting[(partition, key)] = value is not None
        return sum(waiting.values())

    def _topics(self, stage: Stage) -> list[str]:
        return [stage.topic, *stage.retry_topics, stage.dlq_topic]

    def _stage_sample(self, stage: Stage, highs: dict[TopicPartition, int],
                      lows: dict[TopicPartition, int],
                      hour_ago: dict[TopicPartition, int], members: dict[str, list[Member]],
                      now_ms: int) -> Sample:
        inputs = self._committed(stage.group, [stage.topic])
        retries = self._committed(f"{stage.group}.retry", list(stage.retry_topics))
        committed = {**inputs, **retries}

        # no commit yet: the group starts at the earliest record
        def start(tp: TopicPartition) -> int:
            offset = committed.get(tp, -1)
            return offset if offset >= 0 else lows.get(tp, 0)

        lag = {p: max(0, highs[(stage.topic, p)] - start((stage.topic, p)))
               for p in range(self._partitions.get(stage.topic, 0))}
        retry = [self._retry_level(topic, delay, start, highs, now_ms)
                 for topic, delay in stage.retry_topics.items()]
        dlq = [(stage.dlq_topic, p) for p in range(self._partitions.get(stage.dlq_topic, 0))]
        return Sample(
            at=time.monotonic(),
            committed={f"{t}[{p}]": o for (t, p), o in committed.items() if o >= 0},
            lag=lag, retry=retry,
            dlq_size=sum(highs[tp] - lows[tp] for tp in dlq),
            dlq_last_hour=sum(highs[tp] - hour_ago[tp] for tp in dlq if hour_ago[tp] >= 0),
            members=members.get(stage.group, []) + members.get(f"{stage.group}.retry", []))

    def _retry_level(self, topic: str, delay: float, start: Any, highs: dict[TopicPartition, int],
                     now_ms: int) -> RetryLevel:
        spans = {(topic, p): (start((topic, p)), highs[(topic, p)])
                 for p in range(self._partitions.get(topic, 0))}
        first_waiting = self._first_not_due(spans, now_ms)
        due = sum(first_waiting[tp] - lo for tp, (lo, _) in spans.items())
        waiting = sum(hi - first_waiting[tp] for tp, (_, hi) in spans.items())
        return RetryLevel(topic, delay, due, waiting)

    def _first_not_due(self, spans: dict[TopicPartition, tuple[int, int]],
                       now_ms: int) -> dict[TopicPartition, int]:
        """Per partition, the offset of the first record whose due time is still ahead
        (its end when every record is due), by binary search on the due headers."""
        bounds = {tp: [lo, hi] for tp, (lo, hi) in spans.items()}
        while True:
            probes = {tp: (lo + hi) // 2 for tp, (lo, hi) in bounds.items() if lo < hi}
            if not probes:
                return {tp: lo for tp, (lo, _) in bounds.items()}
            for tp, (offset, due) in self._read_dues(probes).items():
                if due is not None and due <= now_ms and offset < bounds[tp][1]:
                    bounds[tp][0] = offset + 1
                else:
                    bounds[tp][1] = probes[tp]

    def _read_dues(self, probes: dict[TopicPartition, int]
                   ) -> dict[TopicPartition, tuple[int, int | None]]:
        """The first record at or after each probe offset: (its offset, its due time).
        A partition that returns nothing in time counts as not due (never overstated)."""
        self._reader.assign([kafka.TopicPartition(t, p, o) for (t, p), o in probes.items()])
        found: dict[TopicPartition, tuple[int, int | None]] = {}
        deadline = time.monotonic() + PROBE_SECONDS
        while len(found) < len(probes) and time.monotonic() < deadline:
            message: Any
            for message in self._reader.consume(len(probes), 0.2):
                tp = (message.topic(), message.partition())
                if message.error() is None and tp not in found and \
                        message.offset() >= probes[tp]:
                    found[tp] = (message.offset(), outcomes.due_time(message.headers()) or 0)
        for tp, offset in probes.items():
            found.setdefault(tp, (offset, None))
        self._reader.unassign()
        return found

    def _list_offsets(self, specs: dict[TopicPartition, Any]) -> dict[TopicPartition, int]:
        if not specs:
            return {}
        timeout = self.app.kafka.connect_timeout
        futures = self._admin.list_offsets(
            {kafka.TopicPartition(t, p): spec for (t, p), spec in specs.items()},
            request_timeout=timeout)
        try:
            return {(tp.topic, tp.partition): future.result(timeout).offset
                    for tp, future in futures.items()}
        except kafka.KafkaException as exc:
            raise kafka.mapped(exc, "listing offsets failed") from exc

    def _committed(self, group: str, topics: list[str]) -> dict[TopicPartition, int]:
        tps = [kafka.TopicPartition(t, p) for t in topics
               for p in range(self._partitions.get(t, 0))]
        if not tps:
            return {}
        request = [ConsumerGroupTopicPartitions(group, tps)]
        timeout = self.app.kafka.connect_timeout
        result = self._patiently(f"reading the offsets of group {group}", lambda: (
            self._admin.list_consumer_group_offsets(request, request_timeout=timeout)[group]
            .result(timeout)))
        return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}

    def _members(self, stages: Sequence[Stage]) -> dict[str, list[Member]]:
        groups = sorted({g for s in stages for g in (s.group, f"{s.group}.retry")})
        return {group: self._describe(group) for group in groups}

    def _describe(self, group: str) -> list[Member]:
        timeout = self.app.kafka.connect_timeout
        description = self._patiently(f"describing group {group}", lambda: (
            self._admin.describe_consumer_groups([group], request_timeout=timeout)[group]
            .result(timeout)))
        return [Member(group, m.member_id, m.client_id, m.host, sorted(
            f"{tp.topic}[{tp.partition}]" for tp in m.assignment.topic_partitions))
            for m in description.members]

    def _patiently(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()``, asked again while the group coordinator is loading or moving (a
        broker just started), until ``connect_timeout``."""
        deadline = time.monotonic() + self.app.kafka.connect_timeout
        while True:
            try:
                return call()
            except kafka.KafkaException as exc:
                if not (_transient(exc) and time.monotonic() < deadline):
                    raise kafka.mapped(exc, what) from exc
                time.sleep(0.5)


_COORDINATOR_BUSY = {RdKafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                     RdKafkaError.COORDINATOR_NOT_AVAILABLE,
                     RdKafkaError.NOT_COORDINATOR}


def _transient(exc: kafka.KafkaException) -> bool:
    """A coordinator that is loading or moving (librdkafka does not flag all as retriable)."""
    error = exc.args[0] if exc.args else None
    if not isinstance(error, RdKafkaError):
        return False
    return bool(error.retriable()) or error.code() in _COORDINATOR_BUSY


def stage_status(stage: Stage, before: Sample, after: Sample) -> StageStatus:
    verdict, reason = judge(before, after)
    worst = max(after.lag.items(), key=lambda item: item[1], default=None)
    moved = sum(max(0, after.committed.get(tp, offset) - offset)
                for tp, offset in before.committed.items())
    return StageStatus(
        stage=stage.name, topic=stage.topic, lag=sum(after.lag.values()),
        worst_partition=worst[0] if worst and worst[1] else None,
        worst_lag=worst[1] if worst else 0, retry=after.retry, dlq_size=after.dlq_size,
        dlq_last_hour=after.dlq_last_hour, members=after.members,
        committed_per_second=round(moved / max(after.at - before.at, 0.001), 1),
        verdict=verdict, reason=reason, pending_forks=after.pending_forks)


def look(app: App, stages: Sequence[Stage], window: float) -> list[StageStatus]:
    """Two samples ``window`` seconds apart, judged: the one-shot ``streamtask status``."""
    if window <= 0:
        raise ConfigurationError(f"--window {window} must be a positive number of seconds")
    inspector = Inspector(app, stages)
    try:
        before = inspector.sample()
        time.sleep(window)
        after = inspector.sample(forks=True)
    finally:
        inspector.close()
    return [stage_status(stage, before[stage.name], after[stage.name]) for stage in stages]
