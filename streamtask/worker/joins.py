"""Fork/join: the state a join keeps, and the join runtime of a worker.

A fork stamps its children with the forking task's id (a stack in the task header
``streamtask.fork``, so forks can nest); branches carry it down their chains, and records
sent to a join are keyed by it, so every branch of one fork meets on one partition of the
join's topic. The join holds the branch results that arrived, per fork, and mirrors each
change to a compacted changelog topic co-partitioned with its input: a worker that takes
over a partition restores the waiting forks from it, so a join survives restarts and
rebalances. A branch's input offset is committed only once its changelog record is durable.

A fork that completed (or timed out) is remembered, so that a branch result arriving after it
(a late branch, or a branch that ran twice) is dropped instead of opening a phantom fork that
would later time out into a spurious dead letter. The changelog's tombstones say which forks
ended, so a worker taking over a partition knows them too; the most recent
:data:`REMEMBERED_FORKS` per partition are kept (and compaction keeps tombstones for the
topic's ``delete.retention.ms``, a day by default).

The worker hands each record on a join's input topic to :meth:`JoinRuntime.arrive` and acts
on the answer: a :class:`Stored` branch goes to the changelog (its offset moves once that is
durable), a :class:`Completed` fork runs the join's handler on the merged task (the
changelog tombstone goes out with its outcome), a :class:`Rejected` record is poison, and a
:class:`Late` branch (its fork already ended) is dropped with a log line.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamtask.config import KafkaSettings
from streamtask.errors import DecodeError, StreamtaskError
from streamtask.kafka import clients as kafka
from streamtask.kafka import headers as dl
from streamtask.model.app import Stage
from streamtask.model.envelope import EnvelopeCodec, Task
from streamtask.worker.job import Outgoing, TopicPartition

log = logging.getLogger("streamtask.worker")

FORK = "streamtask.fork"
"""Envelope header: the ids of the enclosing forks, innermost last, comma-separated."""
FROM_STAGE = "streamtask-from-stage"
"""Record header on a record sent to a join: the branch (stage) it comes from."""
PARTIAL = "streamtask-join-partial"
"""Record header on a join's own input: a fork completed by timeout, run on partial results."""
MERGED = "streamtask-join-merged"
"""Record header on a completed join's retry record or dead letter: the value is the merged
task, to run as it is (a dead letter replayed onto the join's input is not a branch)."""

REMEMBERED_FORKS = 10_000
"""Ended forks remembered per join partition, to drop branch results that come too late."""


def forked(headers: Mapping[str, str], fork_id: str) -> dict[str, str]:
    """Headers for the children of a fork: push the forking task's id."""
    stack = headers.get(FORK)
    return {**headers, FORK: f"{stack},{fork_id}" if stack else fork_id}


def joined(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers after a join: pop the innermost fork."""
    stack = headers.get(FORK, "").split(",")[:-1]
    out = {k: v for k, v in headers.items() if k != FORK}
    if stack:
        out[FORK] = ",".join(stack)
    return out


def fork_of(headers: Mapping[str, str], run_id: str) -> str:
    """The fork a branch result belongs to (the run, for a join with no fork in front)."""
    stack = headers.get(FORK)
    return stack.rsplit(",", 1)[-1] if stack else run_id


@dataclass
class PendingJoin:
    """The branch results of one fork that arrived so far (raw task envelopes)."""

    first_at: int
    parts: dict[str, bytes] = field(default_factory=dict)

    def missing(self, branches: tuple[str, ...]) -> list[str]:
        return [branch for branch in branches if branch not in self.parts]

    def encode(self) -> bytes:
        return orjson.dumps({"first_at": self.first_at, "parts": {
            branch: base64.b64encode(value).decode() for branch, value in self.parts.items()}})

    @classmethod
    def decode(cls, raw: bytes) -> PendingJoin:
        state: dict[str, Any] = orjson.loads(raw)
        return cls(int(state["first_at"]), {
            branch: base64.b64decode(value) for branch, value in state["parts"].items()})


class JoinStore:
    """Waiting forks of the join partitions this worker owns."""

    def __init__(self) -> None:
        self._waiting: dict[TopicPartition, dict[str, PendingJoin]] = {}
        self._ended: dict[TopicPartition, OrderedDict[str, None]] = {}

    def add(self, tp: TopicPartition, fork_id: str, branch: str, value: bytes,
            now_ms: int) -> PendingJoin:
        forks = self._waiting.setdefault(tp, {})
        pending = forks.get(fork_id)
        if pending is None:
            pending = forks[fork_id] = PendingJoin(now_ms)
        pending.parts[branch] = value
        return pending

    def remove(self, tp: TopicPartition, fork_id: str) -> None:
        """The fork ended (joined or timed out): forget its results, remember that it ended."""
        self._waiting.get(tp, {}).pop(fork_id, None)
        ended = self._ended.setdefault(tp, OrderedDict())
        ended[fork_id] = None
        ended.move_to_end(fork_id)
        if len(ended) > REMEMBERED_FORKS:
            ended.popitem(last=False)

    def retract(self, tp: TopicPartition, fork_id: str, branch: str) -> None:
        """Take back a branch result that could not be stored (the fork stays open)."""
        pending = self._waiting.get(tp, {}).get(fork_id)
        if pending is not None:
            pending.parts.pop(branch, None)
            if not pending.parts:
                del self._waiting[tp][fork_id]

    def ended(self, tp: TopicPartition, fork_id: str) -> bool:
        """Whether the fork already joined or timed out (as far as remembered)."""
        return fork_id in self._ended.get(tp, ())

    def restore(self, tp: TopicPartition, key: str, value: bytes | None) -> None:
        """Apply one changelog record (a tombstone: the fork ended)."""
        if value is None:
            self.remove(tp, key)
        else:
            self._waiting.setdefault(tp, {})[key] = PendingJoin.decode(value)
            self._ended.get(tp, OrderedDict()).pop(key, None)

    def expired(self, timeouts: dict[str, float],
                now_ms: int) -> list[tuple[TopicPartition, str, PendingJoin]]:
        """Forks waiting longer than their join's timeout (``timeouts`` by topic, seconds)."""
        return [(tp, fork_id, pending)
                for tp, forks in self._waiting.items()
                for fork_id, pending in forks.items()
                if pending.first_at + timeouts[tp[0]] * 1000 <= now_ms]

    def drop(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._waiting.pop(tp, None)
            self._ended.pop(tp, None)

    def discard(self, tp: TopicPartition, fork_id: str) -> None:
        """Forget a fork without counting it as ended: its branches may arrive again."""
        self._waiting.get(tp, {}).pop(fork_id, None)

    def forks(self, tp: TopicPartition) -> dict[str, PendingJoin]:
        """The waiting forks of one partition (the store's own mapping: do not change it)."""
        return self._waiting.get(tp, {})

    def waiting(self) -> int:
        return sum(len(forks) for forks in self._waiting.values())



@dataclass(frozen=True)
class Stored:
    record: Outgoing
    fork: str
    branch: str


@dataclass(frozen=True)
class Completed:
    task: Task
    fork: str
    tombstone: Outgoing
    value: bytes | None
    """The merged task's envelope (None if it does not encode): what a retry or a dead
    letter of the joined task carries."""


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str


@dataclass(frozen=True)
class Late:
    """A branch result for a fork that already joined or timed out."""

    fork: str
    branch: str


@dataclass(frozen=True)
class TimedOut:
    stage: str
    fork: str
    missing: list[str]
    action: str
    record: Outgoing
    """The dead letter, or the partial join back onto the join's input."""
    tombstone: Outgoing
    """Deletes the fork from the changelog; send it only once ``record`` is durable."""


class JoinRuntime:
    """Joins among one worker's stages."""

    def __init__(self, stages: Iterable[Stage], codec: EnvelopeCodec, transport: kafka.Transport,
                 settings: KafkaSettings,
                 group: str, worker_id: str) -> None:
        self._joins = {stage.topic: stage for stage in stages if stage.join is not None}
        self._codec = codec
        self._transport = transport
        self._settings = settings
        self._group = group
        self._worker_id = worker_id
        self._store = JoinStore()
        self._next_check = 0
        self._limit = kafka.max_record_bytes(settings)

    def is_arrival(self, topic: str, message: Any) -> bool:
        """A branch result on a join's input (not a retry, not a partial completion)."""
        headers = message.headers()
        return topic in self._joins and dl.find(headers, PARTIAL) is None and \
            dl.find(headers, MERGED) is None

    def arrive(self, tp: TopicPartition, message: Any, task: Task,
               now_ms: int) -> Stored | Completed | Rejected | Late:
        stage = self._joins[tp[0]]
        assert stage.join is not None
        branches = stage.join.branches
        branch = (dl.find(message.headers(), FROM_STAGE) or b"").decode(errors="replace")
        if branch not in branches:
            return Rejected("unknown-branch", f"join {stage.name!r} waits for "
                            f"{list(branches)}, not a result from "
                            f"{branch or 'an unnamed stage'!r}")
        fork = fork_of(task.headers, task.run_id)
        if self._store.ended(tp, fork):
            return Late(fork, branch)
        pending = self._store.add(tp, fork, branch, message.value(), now_ms)
        if pending.missing(branches):
            record = Outgoing(stage.changelog_topic, pending.encode(), fork, [], tp[1])
            if record.size() > self._limit:
                self._store.retract(tp, fork, branch)
                return Rejected("join-state-too-large", f"the waiting branches of fork "
                                f"{fork} with this one take {record.size()} bytes in the "
                                f"changelog, over message.max.bytes={self._limit}")
            return Stored(record, fork, branch)
        self._store.remove(tp, fork)
        tombstone = Outgoing(stage.changelog_topic, None, fork, [], tp[1])
        merged = self._merged(stage, task, fork, pending)
        try:
            value: bytes | None = self._codec.encode(merged)
        except StreamtaskError:  # the join's own schema does not take it: run it anyway
            value = None
        return Completed(merged, fork, tombstone, value)

    def _merged(self, stage: Stage, task: Task, fork: str, pending: PendingJoin,
                missing: list[str] | None = None) -> Task:
        payload = {branch: self._codec.decode(value).payload
                   for branch, value in pending.parts.items()}
        headers = dict(task.headers)
        if missing:
            headers["join.missing"] = ",".join(missing)
        return Task.new(stage.name, payload, key=task.key, run_id=task.run_id,
                        parent_id=fork, headers=headers, pipeline_version=task.pipeline_version)

    def expire(self, now_ms: int) -> list[TimedOut]:
        """Forks past their join's timeout, each with the records that settle it."""
        if not self._joins or now_ms < self._next_check:
            return []
        self._next_check = now_ms + 1000
        timeouts = {topic: stage.join.timeout for topic, stage in self._joins.items()
                    if stage.join is not None}
        settled = []
        for tp, fork, pending in self._store.expired(timeouts, now_ms):
            self._store.remove(tp, fork)
            settled.append(self._settle(tp, fork, pending, now_ms))
        return settled

    def _settle(self, tp: TopicPartition, fork: str, pending: PendingJoin, now_ms: int) -> TimedOut:
        stage = self._joins[tp[0]]
        assert stage.join is not None
        missing = pending.missing(stage.join.branches)
        any_branch = self._codec.decode(next(iter(pending.parts.values())))
        value = self._codec.encode(self._merged(stage, any_branch, fork, pending, missing))
        out = Outgoing(stage.topic, value, fork, [(PARTIAL, b"1")], tp[1])
        action = stage.join.on_timeout
        if action != "partial" or out.size() > self._limit:  # too large to run: dead-letter
            action = "dead-letter"
            origin = dl.Origin(tp[0], tp[1], -1, pending.first_at, self._group)
            failure = dl.Failure("join-timeout", f"join {stage.name!r} timed out after "
                                 f"{stage.join.timeout:g}s; missing branches: "
                                 f"{', '.join(missing)}")
            fitted, key, headers = dl.fitted(value, fork, dl.dead_letter_headers(
                origin, failure, stage=stage.name, worker=self._worker_id, attempts=0,
                now_ms=now_ms), self._limit)
            out = Outgoing(stage.dlq_topic, fitted, key, headers)
        tombstone = Outgoing(stage.changelog_topic, None, fork, [], tp[1])
        return TimedOut(stage.name, fork, missing, action, out, tombstone)

    def restore(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Rebuild the waiting forks of newly assigned join partitions from their changelog."""
        for topic, partition in partitions:
            stage = self._joins.get(topic)
            if stage is None:
                continue
            records = self._transport.read_partition(self._settings, stage.changelog_topic,
                                                     partition)
            for key, value in records:
                try:
                    self._store.restore((topic, partition), key, value)
                except (ValueError, KeyError, TypeError, binascii.Error) as error:
                    # orjson's errors are ValueErrors; a record we did not write: skip it
                    self._unreadable(stage, partition, key, error)
            self._drop_undecodable(stage, (topic, partition))

    def _drop_undecodable(self, stage: Stage, tp: TopicPartition) -> None:
        """Forget restored forks holding a branch result this worker cannot decode (written
        by another version, or corrupt): joining or timing them out would fail each time.
        Branches of such a fork that arrive later wait anew (and time out visibly)."""
        for fork, pending in list(self._store.forks(tp).items()):
            for value in pending.parts.values():
                try:
                    self._codec.decode(value)
                except DecodeError as error:
                    self._unreadable(stage, tp[1], fork, error)
                    self._store.discard(tp, fork)
                    break

    def _unreadable(self, stage: Stage, partition: int, fork: str,
                    error: BaseException) -> None:
        log.error("join.changelog_unreadable topic=%s partition=%d fork=%s error=%s",
                  stage.changelog_topic, partition, fork, dl.describe(error),
                  extra={"event": "join.changelog_unreadable",
                         "fields": {"topic": stage.changelog_topic, "partition": partition,
                                    "fork": fork, "error": dl.describe(error)}})

    def drop(self, tps: set[TopicPartition]) -> None:
        self._store.drop(tps)
