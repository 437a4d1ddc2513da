"""Fork/join: the state a join keeps while it waits for every branch of a fork.

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
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

FORK = "streamtask.fork"
"""Envelope header: the ids of the enclosing forks, innermost last, comma-separated."""
FROM_STAGE = "streamtask-from-stage"
"""Record header on a record sent to a join: the branch (stage) it comes from."""
PARTIAL = "streamtask-join-partial"
"""Record header on a join's own input: a fork completed by timeout, run on partial results."""
MERGED = "streamtask-join-merged"
"""Record header on a completed join's retry record or dead letter: the value is the merged
task, to run as it is (a dead letter replayed onto the join's input is not a branch)."""

TP = tuple[str, int]
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
        self._waiting: dict[TP, dict[str, PendingJoin]] = {}
        self._ended: dict[TP, OrderedDict[str, None]] = {}

    def add(self, tp: TP, fork_id: str, branch: str, value: bytes, now_ms: int) -> PendingJoin:
        forks = self._waiting.setdefault(tp, {})
        pending = forks.get(fork_id)
        if pending is None:
            pending = forks[fork_id] = PendingJoin(now_ms)
        pending.parts[branch] = value
        return pending

    def remove(self, tp: TP, fork_id: str) -> None:
        """The fork ended (joined or timed out): forget its results, remember that it ended."""
        self._waiting.get(tp, {}).pop(fork_id, None)
        ended = self._ended.setdefault(tp, OrderedDict())
        ended[fork_id] = None
        ended.move_to_end(fork_id)
        if len(ended) > REMEMBERED_FORKS:
            ended.popitem(last=False)

    def retract(self, tp: TP, fork_id: str, branch: str) -> None:
        """Take back a branch result that could not be stored (the fork stays open)."""
        pending = self._waiting.get(tp, {}).get(fork_id)
        if pending is not None:
            pending.parts.pop(branch, None)
            if not pending.parts:
                del self._waiting[tp][fork_id]

    def ended(self, tp: TP, fork_id: str) -> bool:
        """Whether the fork already joined or timed out (as far as remembered)."""
        return fork_id in self._ended.get(tp, ())

    def restore(self, tp: TP, key: str, value: bytes | None) -> None:
        """Apply one changelog record (a tombstone: the fork ended)."""
        if value is None:
            self.remove(tp, key)
        else:
            self._waiting.setdefault(tp, {})[key] = PendingJoin.decode(value)
            self._ended.get(tp, OrderedDict()).pop(key, None)

    def expired(self, timeouts: dict[str, float], now_ms: int) -> list[tuple[TP, str, PendingJoin]]:
        """Forks waiting longer than their join's timeout (``timeouts`` by topic, seconds)."""
        return [(tp, fork_id, pending)
                for tp, forks in self._waiting.items()
                for fork_id, pending in forks.items()
                if pending.first_at + timeouts[tp[0]] * 1000 <= now_ms]

    def drop(self, tps: set[TP]) -> None:
        for tp in tps:
            self._waiting.pop(tp, None)
            self._ended.pop(tp, None)

    def discard(self, tp: TP, fork_id: str) -> None:
        """Forget a fork without counting it as ended: its branches may arrive again."""
        self._waiting.get(tp, {}).pop(fork_id, None)

    def forks(self, tp: TP) -> dict[str, PendingJoin]:
        """The waiting forks of one partition (the store's own mapping: do not change it)."""
        return self._waiting.get(tp, {})

    def waiting(self) -> int:
        return sum(len(forks) for forks in self._waiting.values())
