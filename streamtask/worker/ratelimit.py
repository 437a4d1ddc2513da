"""Per-stage rate limits, cluster-wide without a shared store.

A stage's :class:`RateLimit` (``app.stage(..., rate_limit=RateLimit(100, per=1.0))``, or
Conductor's ``rateLimitPerFrequency`` / ``rateLimitFrequencyInSeconds``) bounds how many of
its tasks *start* per window across every worker of the stage. No worker talks to another:
each takes the share of the limit that its partitions of the stage's topics (its input and
its retry levels, with the partition counts the broker reports when the worker starts) are
of all of them (``held / total``), re-split whenever partitions are assigned or revoked.
The group's assignment gives each partition to exactly one worker, so the shares add up to
the whole limit, and N workers together stay within it. Counting the retry levels too means
a worker that holds only retry partitions of a stage still has a share for their tasks.

Each worker meters its share with a token bucket per stage in its intake: a ready task of a
limited stage starts only when a token is there, else it waits in the stage's queue, in
order, until one is (no sleeping: the loop goes on polling, committing and collecting
results). Waiting tasks stay held, so a worker that is throttled fills its buffer and its
flow control stops taking records as it does for a slow handler.

The bucket holds at most one window's worth of its share (the burst a limit of ``count``
per ``per`` seconds allows) and starts with one token, so a limit is met from the start
rather than after a burst. What it does not cover: a partition that has no worker (its
share is unused), and the few milliseconds of a rebalance where the old and the new owner
of a partition both count it (eager rebalancing revokes before it assigns, so they do not
overlap there).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from streamtask.errors import ConfigurationError


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` task starts per ``per`` seconds, for the whole stage."""

    count: float
    per: float = 1.0

    def __post_init__(self) -> None:
        if not (self.count > 0 and self.per > 0):
            raise ConfigurationError(f"rate limit {self.count}/{self.per}s: give a positive "
                                     "count per a positive number of seconds")

    @property
    def rate(self) -> float:
        """Task starts per second."""
        return self.count / self.per


class TokenBucket:
    """A share of a :class:`RateLimit`: ``share`` of its rate and of its burst."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.share = 0.0
        self._clock = clock
        self._tokens = 1.0
        self._at = clock()

    def reshare(self, share: float) -> None:
        """Meter ``share`` (0..1) of the limit from now on."""
        self._refill()
        self.share = min(1.0, max(0.0, share))
        self._tokens = min(self._tokens, self._capacity())

    def take(self) -> bool:
        """Take a token if one is there."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _capacity(self) -> float:
        return max(1.0, self.limit.count * self.share)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity(),
                           self._tokens + (now - self._at) * self.limit.rate * self.share)
        self._at = now


J = TypeVar("J")


class StageLimits(Generic[J]):
    """The intake's rate limits: a bucket and a queue of waiting jobs per limited stage."""

    def __init__(self, limits: dict[str, tuple[RateLimit, tuple[str, ...], int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``limits`` maps a stage to its limit, its topics and their declared partitions."""
        self._topics = {stage: topics for stage, (_, topics, _) in limits.items()}
        self._sizes = {topic: partitions for _, topics, partitions in limits.values()
                       for topic in topics}
        self._buckets = {stage: TokenBucket(limit, clock)
                         for stage, (limit, _, _) in limits.items()}
        self._waiting: dict[str, deque[J]] = {stage: deque() for stage in limits}

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def sized(self, partitions: Mapping[str, int]) -> None:
        """The topics' actual partition counts (a topic may have more than declared)."""
        for topic in self._sizes:
            if partitions.get(topic):
                self._sizes[topic] = partitions[topic]

    def reshare(self, held: Iterable[tuple[str, int]]) -> None:
        """Re-split after a rebalance: ``held`` is every partition this worker holds."""
        counts: dict[str, int] = {}
        for topic, _ in held:
            counts[topic] = counts.get(topic, 0) + 1
        for stage, topics in self._topics.items():
            total = sum(self._sizes[topic] for topic in topics)
            self._buckets[stage].reshare(sum(counts.get(t, 0) for t in topics) / total)

    def share(self, stage: str) -> float:
        """The share of ``stage``'s limit this worker meters now."""
        return self._buckets[stage].share

    def defer(self, stage: str, job: J) -> bool:
        """Whether ``job`` must wait (it is queued): its stage is limited and either has
        jobs waiting already (they go first) or no token now."""
        waiting = self._waiting.get(stage)
        if waiting is None:
            return False
        if waiting or not self._buckets[stage].take():
            waiting.append(job)
            return True
        return False

    def release(self) -> Iterator[J]:
        """The waiting jobs whose tokens have come, oldest first per stage."""
        for stage, waiting in self._waiting.items():
            bucket = self._buckets[stage]
            while waiting and bucket.take():
                yield waiting.popleft()

    def drop(self, drop: Callable[[J], bool]) -> list[J]:
        """Remove (and return) the waiting jobs ``drop`` selects."""
        dropped = []
        for stage, waiting in self._waiting.items():
            kept = deque(job for job in waiting if not drop(job))
            dropped += [job for job in waiting if drop(job)]
            self._waiting[stage] = kept
        return dropped
