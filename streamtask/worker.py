"""The worker loop: poll -> decode -> run -> route the outcome -> store the offset -> commit.

One thread (the loop) owns every Kafka client and all offset state; handlers run in a
:mod:`runner`. An offset becomes committable only when its task's handler finished *and*
every record the task produced was acknowledged, and the commit position of a partition is
its lowest unfinished offset (:mod:`offsets`). The loop keeps polling while tasks run; when
it holds as much work as it may, it stops taking records, and pauses its partitions if that
lasts (see ``_flow_control``), so a long task never costs a rebalance.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamtask import acls, clock, kafka, routing, tracing
from streamtask.app import App, Stage
from streamtask.commits import Committer
from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.deadletter import Failure, describe
from streamtask.delays import HeldRecords
from streamtask.envelope import Task
from streamtask.errors import (
    ConfigurationError,
    DecodeError,
    DeliveryFailed,
    ProduceRejected,
    RoutingError,
    StreamtaskError,
)
from streamtask.events import Event, EventBus, EventCounter, EventLogger
from streamtask.joining import JoinRuntime, Late, Rejected, Stored
from streamtask.offsets import PartitionOffsets
from streamtask.ordering import KeyLanes
from streamtask.ratelimit import StageLimits
from streamtask.retry import DeadLettered, RetryLater, decide
from streamtask.runner import AsyncRunner, Completion, ThreadRunner
from streamtask.transactions import Transactions
from streamtask.window import HeldWindow

log = logging.getLogger("streamtask.worker")
TP = tuple[str, int]
PAUSE_WHEN_FULL_FOR = 5.0
"""Seconds a full worker waits before pausing its partitions (see ``_flow_control``)."""
JOIN_GRACE = 30.0
"""Seconds an ``idle_timeout`` run also waits while it has no partitions yet."""
OUTCOME_WAIT = 0.005
"""Seconds the loop waits for a running handler to finish when nothing else needs it."""
OUTCOME_WAIT_FLOWING = 0.001
"""The same while records flow: a record arriving during the wait waits as well."""
FLOWING_FOR = 1.0
"""Records flow while the last one came less than this many seconds ago."""


class TaskTimeout(StreamtaskError):
    """A task ran past its stage's per-task timeout."""


@dataclass(eq=False, slots=True)
class Job:
    """One received record on its way from poll to a committable offset."""

    tp: TP
    offset: int
    lane: object
    task: Task | None
    """None for a poison record on its way to the dead-letter queue."""
    stage: Stage
    partition: PartitionOffsets
    message: Any
    extra: tuple[routing.Outgoing, ...] = ()
    """Records to send along with whatever the outcome is (a join's changelog tombstone)."""
    pending_acks: int = 0
    running: bool = False
    """Handed to a runner (queued there or executing) and its outcome not routed yet."""
    metered: bool = False
    """Past its stage's rate limit (it had its token), so it may start."""
    abandoned: bool = False
    """Timed out while its handler still runs: its key stays taken until the handler ends."""


@dataclass
class WorkerStats:
    """What one ``run`` did; the CLI prints it and tests assert on it."""

    counts: dict[str, int] = field(default_factory=dict)


class Worker:
    """Runs the stages of one app in this process until stopped."""

    def __init__(self, app: App, stages: Sequence[str] | None = None,
                 settings: WorkerSettings | None = None,
                 kafka_settings: KafkaSettings | None = None,
                 events: EventBus | None = None) -> None:
        app.validate()
        self.app = app
        self.stages = [app.get_stage(name) for name in (stages or list(app.stages))]
        if not self.stages:
            raise ConfigurationError(f"app {app.name!r} declares no stages to run")
        self.settings = settings or WorkerSettings()
        self.kafka = kafka_settings or app.kafka
        # Each worker counts on a bus of its own; a caller's bus (shared by several workers,
        # say) is its parent and receives every event.
        self.events = EventBus(parent=events)
        self.counter = EventCounter()
        self.events.subscribe(self.counter)
        self.events.subscribe(EventLogger())
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self._by_topic = {topic: stage for stage in self.stages
                          for topic in (stage.topic, *stage.retry_topics)}
        self._retry_topics = {topic: delay for stage in self.stages
                              for topic, delay in stage.retry_topics.items()}
        self._held = HeldRecords()
        self._window = HeldWindow(self.settings.max_buffered)
        self._just_assigned = False
        self._group_id = self._group()
        self._joins = JoinRuntime(self.stages, app.codec, app.transport, self.kafka, self._group_id,
                                  self.worker_id)
        self._eos = self._exactly_once()
        self._txn: Transactions | None = None
        self._stop = threading.Event()
        self._completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._partitions: dict[TP, PartitionOffsets] = {}
        self._committer = Committer(self._partitions, self.events)
        self._live: set[Job] = set()
        self._lanes: KeyLanes[Job] = KeyLanes()
        self._ready: deque[Job] = deque()
        self._limits: StageLimits[Job] = StageLimits({
            s.name: (s.rate_limit, (s.topic, *s.retry_topics), s.partitions)
            for s in self.stages if s.rate_limit})
        self._running = 0
        self._running_async = 0
        self._paused = False
        self._full_since: float | None = None
        self._finished_since_commit = 0
        self._last_received = 0.0
        self._delivery_error: DeliveryFailed | None = None
        self._next_deadline_check = 0.0
        self._max_record = kafka.max_record_bytes(self.kafka)
        self._spans = tracing.execution_spans()
        """One OpenTelemetry span per execution, when OpenTelemetry is installed."""

    def stop(self) -> None:
        """Ask the loop to drain and exit; safe to call from a signal handler or thread."""
        self._stop.set()

    @property
    def in_flight(self) -> int:
        """Tasks a handler is executing now (read by metrics from another thread)."""
        return sum(len(runner.executing()) for runner in getattr(self, "_runners", ()))

    @property
    def held(self) -> int:
        """Tasks received and not finished, plus retry records held until they are due."""
        return len(self._live) + len(self._held)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, *, max_tasks: int | None = None,
            idle_timeout: float | None = None) -> WorkerStats:
        """Consume until stopped; ``max_tasks``/``idle_timeout`` end the run early (tests, batch).

        Raises :class:`DeliveryFailed` when a produced record is never acknowledged: the
        affected offsets stay uncommitted, so the tasks run again after a restart.
        """
        kafka.wait_for_cluster(self.kafka)
        self._check_topics_exist()
        self._open_clients()
        self.events.emit(Event.WORKER_STARTED, worker=self.worker_id,
                         stages=[s.name for s in self.stages])
        try:
            self._loop(max_tasks, idle_timeout)
        finally:
            self._shutdown()
        return WorkerStats({event.value: n for event, n in self.counter.counts.items()})

    def _open_clients(self) -> None:
        self._threads = ThreadRunner(self._concurrency, self._completions)
        self._coroutines = AsyncRunner(self._completions) if any(
            s.is_async for s in self.stages) else None
        self._runners: list[Any] = [self._threads]
        if self._coroutines is not None:
            self._runners.append(self._coroutines)
        self._producer = self.app.transport.producer(self.kafka, **self._transactional())
        self._txn = Transactions(self._producer) if self._eos else None
        # Retry levels get a consumer (and group) of their own: one group over both would let
        # the assignor hand all input partitions to one worker and all retry partitions to
        # another, since it balances partition counts, not topics.
        inputs = [stage.topic for stage in self.stages]
        self._consumer = self._subscribe(self._group_id, inputs)
        self._consumers = [self._consumer]
        if self._retry_topics:
            retries = self._subscribe(f"{self._group_id}.retry", sorted(self._retry_topics))
            self._consumers.append(retries)
        self._owner = {topic: self._consumers[-1] if topic in self._retry_topics
                       else self._consumer for topic in self._by_topic}
        self._committer.attach(self._owner, self._txn, lambda out: self._send(out, None))

    def _subscribe(self, group: str, topics: list[str]) -> Any:
        consumer = self.app.transport.consumer(
            self.kafka, group,
            **{"session.timeout.ms": self.settings.session_timeout_ms,
               "heartbeat.interval.ms": max(100, self.settings.session_timeout_ms // 3),
               "max.poll.interval.ms": self.settings.max_poll_interval_ms,
               "on_commit": self._committer.on_commit,
               "client.id": self.worker_id})
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        return consumer

    def _transactional(self) -> dict[str, Any]:
        """A stable ``instance_id`` lets a restarted worker fence its crashed predecessor's
        open transaction at once; without one each start gets a fresh id."""
        if not self._eos:
            return {}
        instance = self.settings.instance_id or f"{self.worker_id}-{uuid.uuid4().hex[:8]}"
        return {**kafka.TRANSACTIONAL_DEFAULTS,
                "transactional.id": f"{self._group_id}.{instance}"}

    @property
    def _concurrency(self) -> int:
        declared = [s.concurrency for s in self.stages if s.concurrency is not None]
        return max(declared) if declared else self.settings.concurrency

    def _exactly_once(self) -> bool:
        modes = {stage.exactly_once for stage in self.stages}
        if len(modes) != 1:
            raise ConfigurationError(
                "exactly-once and at-least-once stages must run in separate workers; "
                "pass --stage to choose")
        return modes.pop()

    def _group(self) -> str:
        groups = {stage.group for stage in self.stages}
        if len(groups) != 1:
            raise ConfigurationError(
                "stages with different consumer groups must run in separate workers; "
                f"pass --stage for one of {sorted(groups)}")
        return groups.pop()

    def _check_topics_exist(self) -> None:
        admin = self.app.transport.admin(self.kafka)
        existing = admin.list_topics(timeout=self.kafka.connect_timeout).topics
        needed = {*self._by_topic, *(stage.dlq_topic for stage in self.stages),
                  *(stage.changelog_topic for stage in self.stages if stage.join)}
        missing = sorted(topic for topic in needed if topic not in existing)
        self._limits.sized({topic: len(meta.partitions) for topic, meta in existing.items()})
        if missing:
            hint = acls.invisible_topics_hint(self.app, [s.name for s in self.stages], missing,
                                              self.kafka) if self.kafka.secured else ""
            raise ConfigurationError(
                f"topic(s) {', '.join(missing)} do not exist; create them with "
                f"`streamtask topics ensure <module>:{self.app.name}` (or run the worker with "
                f"--create-topics).{hint}")

    def _loop(self, max_tasks: int | None, idle_timeout: float | None) -> None:
        next_commit = time.monotonic() + self.settings.commit_interval
        last_activity = time.monotonic()
        while not self._stop.is_set():
            received = self._poll()
            self._start_ready()
            completed = self._collect_outcomes(wait=self._outcome_wait(received))
            # A full worker takes no record, so only acknowledgements can move it on: wait for
            # them here rather than spin. Otherwise ``_poll`` has waited for records already,
            # and a wait here would hold up a record arriving meanwhile.
            full = self._full_since is not None and not self._paused
            idle = not (received or completed or self._running or self._ready)
            self._producer.poll(0.005 if idle and full and self._live else 0)
            self._raise_delivery_error()
            self._expire_deadlines()
            self._release_due()
            self._expire_joins()
            now = time.monotonic()
            if now >= next_commit or self._finished_since_commit >= self.settings.commit_every \
                    or self._committer.retry_due(now):
                self._commit()
                next_commit = now + self.settings.commit_interval
            if received or completed or self._live or self._held or self._just_assigned:
                last_activity = now
                self._just_assigned = False
            if max_tasks is not None and self._ended_tasks() >= max_tasks:
                break
            # Joining the group can take a while: idle time counts once partitions came.
            grace = 0.0 if self._partitions else JOIN_GRACE
            if idle_timeout is not None and now - last_activity >= idle_timeout + grace:
                break

    def _outcome_wait(self, received: int) -> float:
        """How long to wait for a handler's outcome. Records that arrive meanwhile wait too
        (the loop cannot wait on the consumer and the runners at once), so while records flow
        the wait is short; beside long, idle handlers it is longer, for fewer wake-ups."""
        if received:
            self._last_received = time.monotonic()
            return 0.0
        if not self._running:
            return 0.0
        flowing = time.monotonic() - self._last_received < FLOWING_FOR
        return OUTCOME_WAIT_FLOWING if flowing else OUTCOME_WAIT

    def _ended_tasks(self) -> int:
        counts = self.counter.counts
        return (counts[Event.TASK_SUCCEEDED] + counts[Event.TASK_RETRIED]
                + counts[Event.TASK_DEAD_LETTERED] + counts[Event.JOIN_BRANCH_STORED]
                + counts[Event.JOIN_LATE])

    def _shutdown(self) -> None:
        """Stop fetching, let running tasks finish (bounded), commit, leave the group."""
        self.events.emit(Event.WORKER_STOPPING, worker=self.worker_id, in_flight=self._running)
        consumers = getattr(self, "_consumers", None)
        if consumers is None:
            return
        try:
            for consumer in consumers:
                assignment = consumer.assignment()
                if assignment:
                    consumer.pause(assignment)
            self._drop_waiting(lambda job: True)
            self._drain(lambda: self._running > 0 or any(j.pending_acks for j in self._live))
            self._commit(asynchronous=False)
            for consumer in consumers:
                consumer.close()
        finally:
            self._producer.flush(5.0)
            self._threads.shutdown()
            if self._coroutines is not None:
                self._coroutines.shutdown()
            self.events.emit(Event.WORKER_STOPPED, worker=self.worker_id)

    # -- poll and decode -------------------------------------------------------------------

    def _poll(self) -> int:
        # consume() waits for a *full* batch until its timeout, so take what is queued without
        # waiting, and block (briefly) only in poll(), which returns on the first record.
        # With handlers running, the loop waits on their completions instead.
        # Never take more than the held-work limit leaves room for.
        held = max(len(self._live), self._window.held(self._partitions))
        room = min(self.settings.poll_batch, self.settings.max_buffered - held)
        if not self._flow_control(room):
            return 0
        room = max(1, room)
        messages = []
        if len(self._consumers) > 1:  # retries first, so a busy input cannot starve them
            messages = self._consumers[1].consume(max(1, room // 2), 0)
        messages += self._consumer.consume(max(1, room - len(messages)), 0)
        wait = 0.0 if self._running or self._ready else 0.005 if self._live else 0.1
        if len(self._consumers) > 1:  # the blocking poll below only watches the inputs
            wait = min(wait, 0.02)
        until_due = self._held.seconds_until_next(clock.now_ms())
        if until_due is not None:
            wait = min(wait, until_due)
        if not messages and wait:
            first = self._consumer.poll(wait)
            if first is not None and room > 1:
                messages = [first, *self._consumer.consume(room - 1, 0)]
            elif first is not None:
                messages = [first]
        self._receive(messages)
        return len(messages)

    def _on_consumer_error(self, error: Any) -> None:
        if error.fatal():
            kafka.raise_for(error, "consumer failed")
        log.warning("consumer error: %s", error.str())

    def _receive(self, messages: list[Any]) -> None:
        partitions, retry_topics, accept = self._partitions, self._retry_topics, self._accept
        for message in messages:
            if message.error() is not None:
                self._on_consumer_error(message.error())
                continue
            tp = (message.topic(), message.partition())
            offsets = partitions.get(tp)
            if offsets is None:  # a record of a partition we no longer own
                continue
            if tp[0] in retry_topics and self._hold_if_early(tp, message):
                continue
            accept(tp, offsets, message)

    def _accept(self, tp: TP, offsets: PartitionOffsets, message: Any) -> None:
        """Decode a record and admit its task (or dead-letter it as poison)."""
        offset = message.offset()
        if not offsets.received(offset):
            return  # redelivered after pause/resume: we already hold it
        stage = self._by_topic[tp[0]]
        value = message.value() or b""
        if len(value) > stage.max_payload_bytes:
            self._poison(stage, offsets, message, Event.RECORD_OVERSIZE, "oversize",
                         f"record of {len(value)} bytes exceeds max_payload_bytes="
                         f"{stage.max_payload_bytes}")
            return
        try:
            if tp[0] in self._retry_topics:
                task = self.app.codec.decode(value, **routing.retry_overrides(message.headers()))
            else:
                task = self.app.codec.decode(value)
        except DecodeError as error:
            self._poison(stage, offsets, message, Event.RECORD_UNDECODABLE, "undecodable",
                         str(error))
            return
        if task.type != stage.name:
            self._poison(stage, offsets, message, Event.TASK_TYPE_UNKNOWN, "unknown-task-type",
                         f"task type {task.type!r} is not handled on {tp[0]}")
            return
        job = Job(tp, offset, message.key() or task.id, task, stage, offsets, message)
        self._live.add(job)
        if stage.join is not None and self._joins.is_arrival(tp[0], message):
            self._join_arrival(job, task)
            return
        self._admit(job)

    def _admit(self, job: Job) -> None:
        if self._lanes.admit(job.lane, job):
            self._ready.append(job)

    def _join_arrival(self, job: Job, task: Task) -> None:
        """Keep a branch result; once every branch is in, run the join on all of them."""
        outcome = self._joins.arrive(job.tp, job.message, task, clock.now_ms())
        if isinstance(outcome, Rejected):
            self._live.discard(job)
            event = Event.TASK_TYPE_UNKNOWN if outcome.reason == "unknown-branch" else \
                Event.RECORD_UNPRODUCIBLE
            self._poison(job.stage, job.partition, job.message, event, outcome.reason,
                         outcome.detail)
        elif isinstance(outcome, Late):
            self.events.emit(Event.JOIN_LATE, stage=job.stage.name, fork=outcome.fork,
                             branch=outcome.branch,
                             where=f"{job.tp[0]}[{job.tp[1]}]@{job.offset}")
            self._finish(job)
        elif isinstance(outcome, Stored):
            self.events.emit(Event.JOIN_BRANCH_STORED, stage=job.stage.name,
                             fork=outcome.fork, branch=outcome.branch)
            self._send_all([outcome.record], job)
        else:
            self.events.emit(Event.JOIN_COMPLETED, stage=job.stage.name, fork=outcome.fork)
            job.task, job.lane = outcome.task, outcome.fork
            if outcome.value is not None:
                job.message = routing.Rewritten(job.message, outcome.value, outcome.fork)
            job.extra = (*job.extra, outcome.tombstone)
            self._admit(job)

    def _expire_joins(self) -> None:
        for timed_out in self._joins.expire(clock.now_ms()):
            self.events.emit(Event.JOIN_TIMED_OUT, stage=timed_out.stage, fork=timed_out.fork,
                             missing=timed_out.missing, action=timed_out.action)
            if self._txn is not None:  # one transaction makes both durable, or neither
                self._send(timed_out.record, None)
                self._send(timed_out.tombstone, None)
                continue
            # The fork leaves the changelog only once its dead letter (or partial join) is
            # durable: a crash in between restores the fork, which times out again.
            self._send(timed_out.record, None,
                       after=functools.partial(self._send, timed_out.tombstone, None))

    def _hold_if_early(self, tp: TP, message: Any) -> bool:
        """Hold a retry level's record (and its partition) until the record is due."""
        due = routing.due_time(message.headers()) or 0
        # A due time past the level's delay (and any jitter) since the record was written is
        # a corrupt header: it would hold the level forever. It waits out the delay instead.
        latest = message.timestamp()[1] + round(self._retry_topics[tp[0]] * 2000) + 60_000
        due = min(due, latest)
        if tp not in self._held and due <= clock.now_ms():
            return False
        # Records behind a held one wait their turn, in offset order.
        if self._held.hold(tp, due, message):
            self._owner[tp[0]].pause([kafka.TopicPartition(*tp)])
        self.events.emit(Event.TASK_DEFERRED, where=f"{tp[0]}[{tp[1]}]@{message.offset()}",
                         due=due)
        return True

    def _release_due(self) -> None:
        ready, resume = self._held.release(clock.now_ms())
        for message in ready:
            tp = (message.topic(), message.partition())
            offsets = self._partitions.get(tp)
            if offsets is not None:
                self._accept(tp, offsets, message)
        for tp in resume:
            self._resume_if_free(tp)

    def _resume_if_free(self, tp: TP) -> None:
        """Resume a partition that no pause holds any longer (full, held retries, window)."""
        if tp in self._partitions and not self._paused and tp not in self._held.paused \
                and tp not in self._window.paused:
            self._owner[tp[0]].resume([kafka.TopicPartition(*tp)])

    def _poison(self, stage: Stage, offsets: PartitionOffsets, message: Any, event: Event,
                reason: str, detail: str) -> None:
        """A record no handler can run goes to the dead-letter queue with the reason."""
        tp = (message.topic(), message.partition())
        self.events.emit(event, where=f"{tp[0]}[{tp[1]}]@{message.offset()}", error=detail)
        job = Job(tp, message.offset(), None, None, stage, offsets, message)
        self._live.add(job)
        self._send_all(self._dead_letter(job, Failure(f"poison:{reason}", detail), attempts=0),
                       job)

    # -- run -------------------------------------------------------------------------------

    def _start_ready(self) -> None:
        """Hand every startable task to its runner. The thread pool's size bounds how many
        plain handlers execute at once; coroutines are handed over only up to the limit."""
        ready = self._ready
        if self._limits:  # tasks whose tokens came go first, in the order they waited
            released = list(self._limits.release())
            for job in released:
                job.metered = True
            ready.extendleft(reversed(released))
        while ready:
            job = ready[0]
            if self._throttled(job):
                ready.popleft()
                continue
            runner: Any = self._threads
            if job.stage.is_async:
                if self._running_async >= self._concurrency:
                    return
                self._running_async += 1
                runner = self._coroutines
            ready.popleft()
            job.running = True
            self._running += 1
            runner.submit(job, job.stage.handler, job.task)

    def _throttled(self, job: Job) -> bool:
        """Whether ``job`` waits for its stage's rate limit (see :mod:`streamtask.ratelimit`);
        it is held meanwhile, so a throttled worker's buffer fills and flow control acts."""
        if job.metered or not self._limits:
            return False
        if self._limits.defer(job.stage.name, job):
            return True
        job.metered = True
        return False

    def _collect_outcomes(self, wait: float = 0.0) -> int:
        completions = self._completions
        handled = 0
        try:
            item = completions.get(timeout=wait) if wait else completions.get_nowait()
        except queue.Empty:
            return 0
        while True:
            job, result, error, seconds = item
            if isinstance(job, Job) and job.running:
                self._route(job, result, error, seconds)
                handled += 1
            elif isinstance(job, Job) and job.abandoned:  # a timed-out handler really ended
                job.abandoned = False
                self._release_lane(job)
            try:
                item = completions.get_nowait()
            except queue.Empty:
                return handled

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        if not self._running or now < self._next_deadline_check:
            return
        self._next_deadline_check = now + 0.05
        for runner in self._runners:
            for job, started in runner.executing():
                timeout = job.stage.timeout
                if timeout is None or started + timeout > now or not job.running:
                    continue
                runner.abandon(job)
                job.abandoned = True
                self._route(job, None, TaskTimeout(
                    f"task at {job.tp[0]}[{job.tp[1]}]@{job.offset} exceeded the "
                    f"{timeout}s timeout of stage {job.stage.name!r}"), now - started)

    # -- route the outcome -----------------------------------------------------------------

    def _route(self, job: Job, result: Any, error: BaseException | None,
               seconds: float) -> None:
        """Map a handler's outcome (after ``seconds`` of running) to what must become
        durable before its offset moves."""
        self._stopped_running(job)
        if not job.abandoned:  # an abandoned handler frees its key when it really ends
            self._release_lane(job)
        if self._partitions.get(job.tp) is not job.partition:  # revoked: the new owner reruns it
            self._end(job)
            return
        task = job.task
        assert task is not None  # only tasks run
        span = self._span(job, task, seconds, error)
        if error is not None:
            self._failed(job, task, error, seconds)
            self._route_failure(job, task, error)
            return
        try:
            children = routing.child_records(self.app, job.stage, task, result, span)
        except StreamtaskError as bad_result:  # e.g. a result that fits no schema or route
            self._failed(job, task, bad_result, seconds)
            self._route_failure(job, task, bad_result)
            return
        except BaseException as broken:  # a result whose own code fails as it is routed
            unroutable = RoutingError(f"the handler's result cannot be routed: "
                                      f"{describe(broken)}")
            unroutable.__cause__ = broken
            self._failed(job, task, unroutable, seconds)
            self._route_failure(job, task, unroutable)
            return
        too_large = self._oversize(children)
        if too_large is not None:  # the producer would refuse it: nothing of it is sent
            self._failed(job, task, RoutingError(too_large), seconds)
            self._send_all(self._unproducible(job, too_large), job)
            return
        self.events.emit(Event.TASK_SUCCEEDED, task_id=task.id, stage=job.stage.name,
                         children=len(children), seconds=seconds, attempt=task.attempt,
                         run_id=task.run_id, parent_id=task.parent_id)
        self._send_all(children, job)

    def _failed(self, job: Job, task: Task, error: BaseException, seconds: float) -> None:
        """Report a failed execution (the handler raised, or its result cannot go out)."""
        event = Event.TASK_TIMED_OUT if isinstance(error, TaskTimeout) else Event.TASK_FAILED
        self.events.emit(event, task_id=task.id, stage=job.stage.name, attempt=task.attempt,
                         where=f"{job.tp[0]}[{job.tp[1]}]@{job.offset}",
                         error=describe(error), seconds=seconds,
                         run_id=task.run_id, parent_id=task.parent_id)

    def _span(self, job: Job, task: Task, seconds: float,
              error: BaseException | None) -> str | None:
        """The execution's span id, when OpenTelemetry records spans. The SDK formats the
        user's exception and runs the user's span processors: neither may end the loop."""
        if self._spans is None:
            return None
        try:
            return self._spans.executed(task.headers, job.stage.name, task.attempt,
                                        f"{job.tp[0]}[{job.tp[1]}]", seconds, error)
        except BaseException as broken:  # user code (span processors) must not kill the worker
            log.warning("tracing failed for %s: %s", task.id, describe(broken))
            return None

    def _route_failure(self, job: Job, task: Task, error: BaseException) -> None:
        """Next retry level or dead-letter queue; the offset moves once that is acknowledged."""
        now = clock.now_ms()
        decision = decide(task.attempt, error, job.stage.retry, now)
        message = describe(error)
        if isinstance(decision, RetryLater):
            out = routing.retry_record(job.stage, task, job.message, decision, error, now)
            if routing.size(out) <= self._max_record:
                self.events.emit(Event.TASK_RETRIED, task_id=task.id, stage=job.stage.name,
                                 attempt=decision.attempt, topic=out.topic, due=decision.due,
                                 run_id=task.run_id, parent_id=task.parent_id)
                self._send_all([out], job)
                return
            decision = DeadLettered("unproducible", f"its retry record of {routing.size(out)} "
                                    f"bytes exceeds message.max.bytes={self._max_record}")
        if decision.detail:
            message = f"{message} ({decision.detail})"
        outs = self._dead_letter(job, Failure(decision.reason, message, error),
                                 attempts=task.attempt)
        self._send_all(outs, job)

    def _dead_letter(self, job: Job, failure: Failure, attempts: int) -> list[routing.Outgoing]:
        """The dead letter of ``job`` (and its compensation task, if the stage has one)."""
        group = self._group_id + (".retry" if job.tp[0] in self._retry_topics else "")
        out = routing.dead_letter_record(job.stage, job.message, failure, group=group,
                                         worker=self.worker_id, attempts=attempts,
                                         now_ms=clock.now_ms(), limit=self._max_record)
        task = job.task
        self.events.emit(Event.TASK_DEAD_LETTERED, stage=job.stage.name, reason=failure.reason,
                         task_id=task.id if task else None,
                         where=f"{job.tp[0]}[{job.tp[1]}]@{job.offset}",
                         error=failure.message, attempt=attempts,
                         run_id=task.run_id if task else None,
                         parent_id=task.parent_id if task else None)
        if task is None or job.stage.compensate is None:
            return [out]
        compensation = routing.compensation_record(self.app, job.stage, task, failure)
        if routing.size(compensation) > self._max_record:
            self.events.emit(Event.RECORD_UNPRODUCIBLE, stage=job.stage.name,
                             task_id=task.id, topic=compensation.topic,
                             error=f"compensation task of {routing.size(compensation)} bytes "
                                   f"exceeds message.max.bytes={self._max_record}")
            return [out]
        return [out, compensation]

    def _send_all(self, outs: list[routing.Outgoing], job: Job) -> None:
        """Send every record of an outcome (and the job's extra records); with none to send,
        the job is durable now. Should the producer refuse one, the task becomes a dead letter
        (records of the outcome sent before it stay sent: at least once).

        In exactly-once mode the records are held and go out with the job's offset, in one
        transaction (see :mod:`streamtask.transactions`).
        """
        outs = [*outs, *job.extra]
        if self._txn is not None:
            self._txn.hold(job.tp, job.offset, outs)
            self._finish(job)
            return
        try:
            for out in outs:
                self._send(out, job)
        except ProduceRejected as error:
            if not error.about_record or job.stage.dlq_topic in {o.topic for o in outs}:
                raise  # the producer, or even a dead letter, fails: stop; the task reruns
            self._send_all(self._unproducible(job, str(error)), job)
            return
        if not outs:
            self._finish(job)

    def _oversize(self, outs: list[routing.Outgoing]) -> str | None:
        """What is wrong with the first record of ``outs`` the producer would refuse."""
        for out in outs:
            size = routing.size(out)
            if size > self._max_record:
                return (f"a record of {size} bytes for {out.topic} exceeds "
                        f"message.max.bytes={self._max_record}")
        return None

    def _unproducible(self, job: Job, detail: str) -> list[routing.Outgoing]:
        attempts = job.task.attempt if job.task is not None else 0
        return self._dead_letter(job, Failure("unproducible", detail), attempts=attempts)

    def _send(self, out: routing.Outgoing, job: Job | None,
              after: Callable[[], None] | None = None) -> None:
        """Produce a record on behalf of ``job``; the job finishes when all are acknowledged.
        ``after`` runs once the record is acknowledged.

        Raises :class:`ProduceRejected` when librdkafka refuses the record outright.
        """
        def acknowledged(error: Any, _message: Any) -> None:
            if error is not None:
                self._delivery_error = kafka.delivery_error(error, out.topic, self.kafka)
                self.events.emit(Event.DELIVERY_FAILED, topic=out.topic, error=error.str())
                return
            if after is not None:
                after()
            if job is not None:
                job.pending_acks -= 1
                if job.pending_acks == 0:
                    self._finish(job)

        # Counted before produce: waiting for room in a full queue serves the acknowledgements
        # of the job's earlier records, which must not finish the job while this one is unsent.
        if job is not None:
            job.pending_acks += 1
        try:
            kafka.produce(self._producer, out.topic, out.value, out.key, headers=out.headers,
                          partition=out.partition, on_delivery=acknowledged)
        except ProduceRejected:
            if job is not None:
                job.pending_acks -= 1
            raise
        if self._txn is not None:
            self._txn.produced()

    def _raise_delivery_error(self) -> None:
        if self._delivery_error is not None:
            raise self._delivery_error

    def _finish(self, job: Job) -> None:
        """The task's outcome is durable: its offset may be committed."""
        if self._partitions.get(job.tp) is job.partition:
            job.partition.finished(job.offset)
            self._finished_since_commit += 1
            if self._window.overfull(job.tp, job.partition):
                self._owner[job.tp[0]].pause([kafka.TopicPartition(*job.tp)])
            elif self._window.drained(job.tp, job.partition):
                self._resume_if_free(job.tp)
        self._live.discard(job)

    def _end(self, job: Job) -> None:
        self._live.discard(job)

    def _stopped_running(self, job: Job) -> None:
        job.running = False
        self._running -= 1
        if job.stage.is_async:
            self._running_async -= 1

    def _release_lane(self, job: Job) -> None:
        """The job no longer runs: the next task of its key may start (results may be in flight)."""
        following = self._lanes.release(job.lane)
        if following is not None:
            self._ready.append(following)

    # -- flow control and commits ----------------------------------------------------------

    def _flow_control(self, room: int) -> bool:
        """Whether to consume now. A full worker first just stops taking records (librdkafka
        stops fetching once its bounded queue is full, and keeps what it fetched); only when
        it stays full for a while are the partitions paused, so that polling goes on
        (callbacks, ``max.poll.interval.ms``) without taking records. Pausing is the
        exception because librdkafka drops a paused partition's prefetched records and may
        take up to a second to fetch again after the resume (measured here)."""
        now = time.monotonic()
        if room > 0:
            self._full_since = None
            if self._paused:
                held = self._held.paused | self._window.paused
                for consumer in self._consumers:
                    consumer.resume([tp for tp in consumer.assignment()
                                     if (tp.topic, tp.partition) not in held])
                self._paused = False
            return True
        if self._full_since is None:
            self._full_since = now
        if not self._paused and now - self._full_since >= PAUSE_WHEN_FULL_FOR:
            for consumer in self._consumers:
                consumer.pause(consumer.assignment())
            self._paused = True
        return self._paused  # paused: poll for callbacks, no record can come

    def _commit(self, asynchronous: bool = True, only: set[TP] | None = None) -> None:
        self._finished_since_commit = 0
        self._committer.commit(asynchronous, only)

    # -- rebalance ---------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._just_assigned = True
        self._joins.restore((tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            self._partitions.setdefault((tp.topic, tp.partition), PartitionOffsets())
        self._limits.reshare(self._partitions)
        # librdkafka keeps a partition's pause flag while it is revoked or lost and applies it
        # when the partition comes back; the worker's own pause state (flow control, held
        # retries) was reset for it meanwhile, so set the flag to match, both ways.
        if self._paused:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        self.events.emit(Event.PARTITIONS_ASSIGNED,
                         partitions=[f"{p.topic}[{p.partition}]" for p in partitions])

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        """Finish (bounded) the revoked partitions' running tasks and commit before they go."""
        revoked = {(p.topic, p.partition) for p in partitions}
        self._held.drop(revoked)
        self._joins.drop(revoked)
        self._drop_waiting(lambda job: job.tp in revoked)
        self._drain(lambda: any(j.tp in revoked and (j.running or j.pending_acks)
                                for j in self._live))
        self._commit(asynchronous=False, only=revoked)
        if self._txn is not None:
            self._txn.drop(revoked)
        self._forget(revoked)
        self.events.emit(Event.PARTITIONS_REVOKED, partitions=_names(revoked))

    def _on_lost(self, _consumer: Any, partitions: list[Any]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        self._held.drop(lost)
        self._joins.drop(lost)
        self._drop_waiting(lambda job: job.tp in lost)
        if self._txn is not None:  # their tasks run again; these outputs must never go out
            self._txn.drop(lost)
        self._forget(lost)
        self.events.emit(Event.PARTITIONS_LOST, partitions=_names(lost))

    def _forget(self, tps: set[TP]) -> None:
        # After the drain: tasks finishing during it may have paused a partition again.
        self._window.drop(tps)
        for tp in tps:
            self._partitions.pop(tp, None)
        self._limits.reshare(self._partitions)
        for job in [j for j in self._live if j.tp in tps and not j.running]:
            self.events.emit(Event.TASK_ABANDONED, task_id=job.task.id if job.task else None,
                             where=f"{job.tp[0]}[{job.tp[1]}]@{job.offset}")
            self._end(job)

    def _drop_waiting(self, drop: Any) -> None:
        """Forget tasks that have not started: they stay uncommitted and will be redelivered."""
        for job in self._lanes.discard_waiting(lambda job: not drop(job)):
            self._live.discard(job)
        for job in [j for j in self._ready if drop(j)] + self._limits.drop(drop):
            if job in self._ready:
                self._ready.remove(job)
            self._release_lane(job)
            self._end(job)
        for runner in self._runners:
            for job in runner.withdraw(drop):
                self._stopped_running(job)
                self._release_lane(job)
                self._end(job)

    def _drain(self, busy: Any) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout
        while busy() and time.monotonic() < deadline:
            self._collect_outcomes(wait=0.02)
            self._producer.poll(0)
            self._expire_deadlines()
            if self._delivery_error is not None:
                return


def _names(tps: set[TP]) -> list[str]:
    return sorted(f"{topic}[{partition}]" for topic, partition in tps)


