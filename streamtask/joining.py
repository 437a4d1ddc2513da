"""The join runtime of a worker: branch arrivals, timeouts, and restoring waiting forks.

The worker hands each record on a join's input topic to :meth:`JoinRuntime.arrive` and acts
on the answer: a :class:`Stored` branch goes to the changelog (its offset moves once that is
durable), a :class:`Completed` fork runs the join's handler on the merged task (the
changelog tombstone goes out with its outcome), a :class:`Rejected` record is poison.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streamtask import deadletter as dl
from streamtask import kafka
from streamtask.app import Stage
from streamtask.config import KafkaSettings
from streamtask.envelope import EnvelopeCodec, Task
from streamtask.join import FROM_STAGE, PARTIAL, TP, JoinStore, PendingJoin, fork_of
from streamtask.routing import Outgoing


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


@dataclass(frozen=True)
class Rejected:
    detail: str


@dataclass(frozen=True)
class TimedOut:
    stage: str
    fork: str
    missing: list[str]
    action: str
    records: list[Outgoing]


class JoinRuntime:
    """Joins among one worker's stages."""

    def __init__(self, stages: Iterable[Stage], codec: EnvelopeCodec, settings: KafkaSettings,
                 group: str, worker_id: str) -> None:
        self._joins = {stage.topic: stage for stage in stages if stage.join is not None}
        self._codec = codec
        self._settings = settings
        self._group = group
        self._worker_id = worker_id
        self._store = JoinStore()
        self._next_check = 0

    def is_arrival(self, topic: str, message: Any) -> bool:
        """A branch result on a join's input (not a retry, not a partial completion)."""
        return topic in self._joins and dl.find(message.headers(), PARTIAL) is None

    def arrive(self, tp: TP, message: Any, task: Task,
               now_ms: int) -> Stored | Completed | Rejected:
        stage = self._joins[tp[0]]
        assert stage.join is not None
        branches = stage.join.branches
        branch = (dl.find(message.headers(), FROM_STAGE) or b"").decode(errors="replace")
        if branch not in branches:
            return Rejected(f"join {stage.name!r} waits for {list(branches)}, not a result "
                            f"from {branch or 'an unnamed stage'!r}")
        fork = fork_of(task.headers, task.run_id)
        pending = self._store.add(tp, fork, branch, message.value(), now_ms)
        if pending.missing(branches):
            return Stored(Outgoing(stage.changelog_topic, pending.encode(), fork, [], tp[1]),
                          fork, branch)
        self._store.remove(tp, fork)
        tombstone = Outgoing(stage.changelog_topic, None, fork, [], tp[1])
        return Completed(self._merged(stage, task, fork, pending), fork, tombstone)

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
        if stage.join.on_timeout == "partial":  # back onto the join's input, to run as is
            out = Outgoing(stage.topic, value, fork, [(PARTIAL, b"1")], tp[1])
        else:
            origin = dl.Origin(tp[0], tp[1], -1, pending.first_at, self._group)
            failure = dl.Failure("join-timeout", f"join {stage.name!r} timed out after "
                                 f"{stage.join.timeout:g}s; missing branches: "
                                 f"{', '.join(missing)}")
            out = Outgoing(stage.dlq_topic, value, fork, dl.dead_letter_headers(
                origin, failure, stage=stage.name, worker=self._worker_id, attempts=0,
                now_ms=now_ms))
        tombstone = Outgoing(stage.changelog_topic, None, fork, [], tp[1])
        return TimedOut(stage.name, fork, missing, stage.join.on_timeout, [out, tombstone])

    def restore(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Rebuild the waiting forks of newly assigned join partitions from their changelog."""
        for topic, partition in partitions:
            stage = self._joins.get(topic)
            if stage is None:
                continue
            for key, value in kafka.read_partition(self._settings, stage.changelog_topic,
                                                   partition):
                self._store.restore((topic, partition), key, value)

    def drop(self, tps: set[TP]) -> None:
        self._store.drop(tps)
