"""The scheduler: which admitted job runs when, and where.

A job the intake admitted waits for its key (:class:`~streamtask.worker.lanes.KeyLanes`:
one task per key at a time, in offset order), then for its stage's rate limit
(:mod:`streamtask.worker.ratelimit`), then runs on a runner (threads for plain handlers, an
event loop for coroutines; :mod:`streamtask.worker.runners`). The scheduler hands back each
execution that ended, or ran past its stage's timeout, with its bookkeeping done (the key
is free for the next task, unless an abandoned handler still holds it); what the outcome
means is for :mod:`streamtask.worker.outcomes`.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streamtask.model.app import Stage
from streamtask.worker.job import Job, TopicPartition
from streamtask.worker.lanes import KeyLanes
from streamtask.worker.outcomes import TaskTimeout
from streamtask.worker.ratelimit import StageLimits
from streamtask.worker.runners import AsyncRunner, Completion, Runner, ThreadRunner

Ended = tuple[Job, Any, BaseException | None, float]
"""(job, result, error, seconds it ran) of an execution whose outcome is to be routed."""
DEADLINE_CHECK_EVERY = 0.05
"""Seconds between two looks for executions past their stage's timeout."""


class Scheduler:
    """Admitted jobs until their execution ended: waiting, throttled, queued or running."""

    def __init__(self, stages: Iterable[Stage], concurrency: int) -> None:
        stages = list(stages)
        self.concurrency = concurrency
        self._async = any(s.is_async for s in stages)
        self.limits: StageLimits[Job] = StageLimits({
            s.name: (s.rate_limit, (s.topic, *s.retry_topics), s.partitions)
            for s in stages if s.rate_limit})
        self._lanes: KeyLanes[Job] = KeyLanes()
        self._ready: deque[Job] = deque()
        self._completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._threads: Runner | None = None
        self._coroutines: Runner | None = None
        self.runners: list[Runner] = []
        self.running = 0
        """Jobs handed to a runner whose outcome is not routed yet."""
        self._running_async = 0
        self._next_deadline_check = 0.0

    @property
    def started(self) -> bool:
        return bool(self.runners)

    @property
    def busy(self) -> bool:
        """Something runs or could start now."""
        return bool(self.running or self._ready)

    @property
    def executing(self) -> int:
        """Handlers executing now (read by metrics from another thread)."""
        return sum(len(runner.executing()) for runner in list(self.runners))

    def start(self) -> None:
        """Start the runners: the handler threads and, for coroutine stages, an event loop."""
        self._threads = ThreadRunner(self.concurrency, self._completions)
        self.runners = [self._threads]
        if self._async:
            self._coroutines = AsyncRunner(self._completions)
            self.runners.append(self._coroutines)

    def shutdown(self) -> None:
        for runner in self.runners:
            runner.shutdown()

    def reshare(self, partitions: Mapping[TopicPartition, object]) -> None:
        """Partitions moved: re-split the stages' rate limits (see :mod:`ratelimit`)."""
        self.limits.reshare(partitions)

    def admit(self, job: Job) -> None:
        """A job to run once its key is free."""
        if self._lanes.admit(job.lane, job):
            self._ready.append(job)

    def start_ready(self) -> None:
        """Hand every startable job to its runner. The thread pool's size bounds how many
        plain handlers execute at once; coroutines are handed over only up to the limit."""
        ready = self._ready
        if self.limits:  # tasks whose tokens came go first, in the order they waited
            released = list(self.limits.release())
            for job in released:
                job.metered = True
            ready.extendleft(reversed(released))
        while ready:
            job = ready[0]
            if self._throttled(job):
                ready.popleft()
                continue
            runner = self._threads
            if job.stage.is_async:
                if self._running_async >= self.concurrency:
                    return
                self._running_async += 1
                runner = self._coroutines
            assert runner is not None
            ready.popleft()
            job.running = True
            self.running += 1
            runner.submit(job, job.stage.handler, job.task)

    def _throttled(self, job: Job) -> bool:
        """Whether ``job`` waits for its stage's rate limit; it is held meanwhile, so a
        throttled worker's buffer fills and flow control acts."""
        if job.metered or not self.limits:
            return False
        if self.limits.defer(job.stage.name, job):
            return True
        job.metered = True
        return False

    def ended(self, wait: float = 0.0) -> list[Ended]:
        """Executions that ended since the last call (waiting up to ``wait`` for one)."""
        completions = self._completions
        try:
            item = completions.get(timeout=wait) if wait else completions.get_nowait()
        except queue.Empty:
            return []
        ended: list[Ended] = []
        while True:
            job, result, error, seconds = item
            if isinstance(job, Job) and job.running:
                self._stopped(job)
                self._release_lane(job)
                ended.append((job, result, error, seconds))
            elif isinstance(job, Job) and job.abandoned:  # a timed-out handler really ended
                job.abandoned = False
                self._release_lane(job)
            try:
                item = completions.get_nowait()
            except queue.Empty:
                return ended

    def overdue(self) -> list[Ended]:
        """Executions past their stage's timeout, abandoned now: their key stays taken
        until the handler really returns (then :meth:`ended` frees it)."""
        now = time.monotonic()
        if not self.running or now < self._next_deadline_check:
            return []
        self._next_deadline_check = now + DEADLINE_CHECK_EVERY
        late: list[Ended] = []
        for runner in self.runners:
            for job, started in runner.executing():
                timeout = job.stage.timeout
                if timeout is None or started + timeout > now or not job.running:
                    continue
                runner.abandon(job)
                job.abandoned = True
                self._stopped(job)
                late.append((job, None, TaskTimeout(
                    f"task at {job.where} exceeded the {timeout}s timeout of stage "
                    f"{job.stage.name!r}"), now - started))
        return late

    def _stopped(self, job: Job) -> None:
        job.running = False
        self.running -= 1
        if job.stage.is_async:
            self._running_async -= 1

    def _release_lane(self, job: Job) -> None:
        """The job no longer runs: the next task of its key may start (results may be in flight)."""
        following = self._lanes.release(job.lane)
        if following is not None:
            self._ready.append(following)

    def drop(self, drop: Callable[[Job], bool]) -> list[Job]:
        """Take back the jobs that have not started and for which ``drop`` is true (their
        partitions left, or the worker stops): they stay uncommitted and are redelivered."""
        dropped = self._lanes.discard_waiting(lambda job: not drop(job))
        for job in [j for j in self._ready if drop(j)] + self.limits.drop(drop):
            if job in self._ready:
                self._ready.remove(job)
            self._release_lane(job)
            dropped.append(job)
        for runner in self.runners:
            for job in runner.withdraw(drop):
                self._stopped(job)
                self._release_lane(job)
                dropped.append(job)
        return dropped
