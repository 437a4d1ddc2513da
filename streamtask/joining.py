"""The join runtime of a worker: branch arrivals, timeouts, and restoring waiting forks.

The worker hands each record on a join's input topic to :meth:`JoinRuntime.arrive` and acts
on the answer: a :class:`Stored` branch goes to the changelog (its offset moves once that is
durable), a :class:`Completed` fork runs the join's handler on the merged task (the
changelog tombstone goes out with its outcome), a :class:`Rejected` record is poison, and a
:class:`Late` branch (its fork already ended) is dropped with a log line.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streamtask import deadletter as dl
from streamtask import kafka
from streamtask.app import Stage
from streamtask.config import KafkaSettings
from streamtask.envelope import EnvelopeCodec, Task
from streamtask.errors import DecodeError, StreamtaskError
from streamtask.join import FROM_STAGE, MERGED, PARTIAL, TP, JoinStore, PendingJoin, fork_of
from streamtask.routing import Outgoing, size

log = logging.getLogger("streamtask.worker")


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

    def arrive(self, tp: TP, message: Any, task: Task,
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
            if size(record) > self._limit:
                self._store.retract(tp, fork, branch)
                return Rejected("join-state-too-large", f"the waiting branches of fork "
                                f"{fork} with this one take {size(record)} bytes in the "
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

    def _settle(self, tp: TP, fork: str, pending: PendingJoin, now_ms: int) -> TimedOut:
        stage = self._joins[tp[0]]
        assert stage.join is not None
        missing = pending.missing(stage.join.branches)
        any_branch = self._codec.decode(next(iter(pending.parts.values())))
        value = self._codec.encode(self._merged(stage, any_branch, fork, pending, missing))
        out = Outgoing(stage.topic, value, fork, [(PARTIAL, b"1")], tp[1])
        action = stage.join.on_timeout
        if action != "partial" or size(out) > self._limit:  # too large to run: dead-letter
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

    def _drop_undecodable(self, stage: Stage, tp: TP) -> None:
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

    def drop(self, tps: set[TP]) -> None:
        self._store.drop(tps)
