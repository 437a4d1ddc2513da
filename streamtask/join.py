"""Fork/join: the state a join keeps while it waits for every branch of a fork.

A fork stamps its children with the forking task's id (a stack in the task header
``streamtask.fork``, so forks can nest); branches carry it down their chains, and records
sent to a join are keyed by it, so every branch of one fork meets on one partition of the
join's topic. The join holds the branch results that arrived, per fork, and mirrors each
change to a compacted changelog topic co-partitioned with its input: a worker that takes
over a partition restores the waiting forks from it, so a join survives restarts and
rebalances. A branch's input offset is committed only once its changelog record is durable.
"""

from __future__ import annotations

import base64
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

TP = tuple[str, int]


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

    def add(self, tp: TP, fork_id: str, branch: str, value: bytes, now_ms: int) -> PendingJoin:
        forks = self._waiting.setdefault(tp, {})
        pending = forks.get(fork_id)
        if pending is None:
            pending = forks[fork_id] = PendingJoin(now_ms)
        pending.parts[branch] = value
        return pending

    def remove(self, tp: TP, fork_id: str) -> None:
        self._waiting.get(tp, {}).pop(fork_id, None)

    def restore(self, tp: TP, key: str, value: bytes | None) -> None:
        """Apply one changelog record (a tombstone removes the fork)."""
        if value is None:
            self.remove(tp, key)
        else:
            self._waiting.setdefault(tp, {})[key] = PendingJoin.decode(value)

    def expired(self, timeouts: dict[str, float], now_ms: int) -> list[tuple[TP, str, PendingJoin]]:
        """Forks waiting longer than their join's timeout (``timeouts`` by topic, seconds)."""
        return [(tp, fork_id, pending)
                for tp, forks in self._waiting.items()
                for fork_id, pending in forks.items()
                if pending.first_at + timeouts[tp[0]] * 1000 <= now_ms]

    def drop(self, tps: set[TP]) -> None:
        for tp in tps:
            self._waiting.pop(tp, None)

    def waiting(self) -> int:
        return sum(len(forks) for forks in self._waiting.values())
