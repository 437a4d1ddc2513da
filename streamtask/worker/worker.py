"""The worker loop: poll -> decode -> run -> route the outcome -> deliver -> commit.

One thread (the loop) owns every Kafka client and all offset state; handlers run in a
:mod:`~streamtask.worker.runners` runner. The worker is the lifecycle (open the clients,
run the loop as named steps, answer rebalances, shut down) over pieces that each own their
state: the :class:`~streamtask.worker.intake.Intake` (consumers, flow control, held retries,
decode), :class:`~streamtask.worker.lanes.KeyLanes` (per-key order), the runners, the pure
:mod:`~streamtask.worker.outcomes`, the :class:`~streamtask.worker.delivery.Delivery`
(at-least-once or transactional), the :class:`~streamtask.worker.joins.JoinRuntime` and
per-partition :class:`~streamtask.worker.offsets.PartitionOffsets`.

An offset becomes committable only when its task's handler finished *and* every record the
task produced was acknowledged, and the commit position of a partition is its lowest
unfinished offset. The loop keeps polling while tasks run; when it holds as much work as it
may, it stops taking records, and pauses its partitions if that lasts, so a long task never
costs a rebalance.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamtask import clock
from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.errors import ConfigurationError, DeliveryFailed, ProduceRejected
from streamtask.events import Event, EventBus, EventCounter, EventLogger
from streamtask.kafka import acls
from streamtask.kafka import clients as kafka
from streamtask.kafka.headers import describe
from streamtask.model.app import App
from streamtask.ops import tracing
from streamtask.worker import outcomes
from streamtask.worker.delivery import AtLeastOnce, Delivery, open_delivery
from streamtask.worker.intake import PAUSE_WHEN_FULL_FOR, Intake
from streamtask.worker.job import Job, Outgoing, Poison, TopicPartition, names
from streamtask.worker.joins import JoinRuntime, Late, Rejected, Stored
from streamtask.worker.liveness import DeliveryWatch, FetchWatch, GroupWatch
from streamtask.worker.offsets import PartitionOffsets
from streamtask.worker.outcomes import Outcome, TaskTimeout
from streamtask.worker.scheduler import Scheduler

log = logging.getLogger("streamtask.worker")
JOIN_GRACE = 30.0
"""Seconds an ``idle_timeout`` run also waits while it has no partitions yet."""
OUTCOME_WAIT = 0.005
"""Seconds the loop waits for a running handler to finish when nothing else needs it."""
OUTCOME_WAIT_FLOWING = 0.001
"""The same while records flow: a record arriving during the wait waits as well."""
FLOWING_FOR = 1.0
"""Records flow while the last one came less than this many seconds ago."""
SUBSCRIBERS_TIMEOUT = 10.0
"""Seconds a stopped worker waits for its detached event subscribers to take their last
events (the trail's final flush waits up to 10 s for the broker)."""

__all__ = ["JOIN_GRACE", "PAUSE_WHEN_FULL_FOR", "TaskTimeout", "Worker", "WorkerStats"]


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
        self._group_id = self._group()
        self._eos = self._exactly_once()
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}
        self._intake = Intake(self.stages, app.codec, self.settings, self._partitions,
                              self.events)
        self._context = outcomes.Context(app, self._group_id, self._intake.retry_topics,
                                         self.worker_id, kafka.max_record_bytes(self.kafka),
                                         outcomes.chains(app))
        self._joins = JoinRuntime(self.stages, app.codec, app.transport, self.kafka,
                                  self._group_id, self.worker_id)
        self._scheduler = Scheduler(self.stages, self._concurrency)
        self._just_assigned = False
        self._stop = threading.Event()
        self._live: set[Job] = set()
        """Every job taken in whose offset is not durable yet (running, waiting or sending)."""
        self._finished_since_commit = 0
        self._last_received = 0.0
        self._stop_by: float | None = None
        """Once shutting down: when draining ends, for the shutdown's drain and for the
        revoke that closing the consumer calls, so the two together wait one drain timeout."""
        self._spans = tracing.execution_spans()
        """One OpenTelemetry span per execution, when OpenTelemetry is installed."""
        self._group_watch = GroupWatch(self.settings.rejoin_timeout)
        self._fetch_watch = FetchWatch(self.settings.rejoin_timeout)
        self._intake.heard = self._fetch_watch.heard
        self._delivery_watch = DeliveryWatch(self.settings.rejoin_timeout)
        self._durable_count = 0
        """Tasks made durable so far (the delivery watch's sign of progress)."""
        self._retired: set[Any] = set()
        """Consumers replaced because they were stuck: their callbacks are ignored."""

    def stop(self) -> None:
        """Ask the loop to drain and exit; safe to call from a signal handler or thread."""
        self._stop.set()

    @property
    def in_flight(self) -> int:
        """Tasks a handler is executing now (read by metrics from another thread)."""
        return self._scheduler.executing

    @property
    def held(self) -> int:
        """Tasks received and not finished, plus retry records held until they are due."""
        return len(self._live) + len(self._intake.held)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, *, max_tasks: int | None = None,
            idle_timeout: float | None = None) -> WorkerStats:
        """Consume until stopped; ``max_tasks``/``idle_timeout`` end the run early (tests, batch).

        Raises :class:`DeliveryFailed` when a produced record is never acknowledged: the
        affected offsets stay uncommitted, so the tasks run again after a restart.
        """
        self.app.transport.wait_for_cluster(self.kafka)
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
        self._scheduler.start()
        producer = self._producer = self.app.transport.producer(self.kafka,
                                                                **self._transactional())
        self._delivery: Delivery = open_delivery(producer, self.kafka, self.events,
                                                 self._finish, self._partitions,
                                                 exactly_once=self._eos)
        self._delivery.attach(self._intake.open(self._subscribe, self._group_id))

    def _subscribe(self, group: str, topics: list[str]) -> Any:
        opened: list[Any] = []

        def on_commit(error: Any, partitions: list[Any]) -> None:
            if not (opened and opened[0] in self._retired):  # a retired one closes elsewhere
                self._delivery.on_commit(error, partitions)

        consumer = self.app.transport.consumer(
            self.kafka, group,
            **{"session.timeout.ms": self.settings.session_timeout_ms,
               "heartbeat.interval.ms": max(100, self.settings.session_timeout_ms // 3),
               "max.poll.interval.ms": self.settings.max_poll_interval_ms,
               "on_commit": on_commit,
               "client.id": self.worker_id})
        opened.append(consumer)
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
        needed = {*self._intake.topics, *(stage.dlq_topic for stage in self.stages),
                  *(stage.changelog_topic for stage in self.stages if stage.join)}
        missing = sorted(topic for topic in needed if topic not in existing)
        self._scheduler.limits.sized({topic: len(meta.partitions)
                                      for topic, meta in existing.items()})
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
            self._scheduler.start_ready()
            completed = self._route_ended(wait=self._outcome_wait(received))
            # A full worker takes no record, so only acknowledgements can move it on: wait for
            # them here rather than spin. Otherwise ``_poll`` has waited for records already,
            # and a wait here would hold up a record arriving meanwhile.
            idle = not (received or completed or self._scheduler.busy)
            self._delivery.serve(0.005 if idle and self._intake.full and self._live else 0)
            self._route_overdue()
            self._release_due()
            self._expire_joins()
            self._recreate_stuck()
            self._recreate_unacknowledged()
            now = time.monotonic()
            if now >= next_commit or self._finished_since_commit >= self.settings.commit_every \
                    or self._delivery.retry_due(now):
                self._commit()
                next_commit = now + self.settings.commit_interval
            if received or completed or self._live or self._intake.held or self._just_assigned:
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
        if not self._scheduler.running:
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
        self.events.emit(Event.WORKER_STOPPING, worker=self.worker_id,
                         in_flight=self._scheduler.running)
        if self._intake.inputs is None:  # the clients never opened
            self._scheduler.shutdown()
            return
        self._stop_by = time.monotonic() + self.settings.drain_timeout
        try:
            self._intake.stop()
            self._drop_waiting(lambda job: True)
            self._drain(lambda: self._scheduler.running > 0
                        or any(j.pending_acks for j in self._live))
            self._commit(asynchronous=False)
            self._intake.close()
        finally:
            self._delivery.close(5.0)
            self._scheduler.shutdown()
            self.events.emit(Event.WORKER_STOPPED, worker=self.worker_id)
            self.events.close(SUBSCRIBERS_TIMEOUT)

    # -- take in -----------------------------------------------------------------------------

    def _poll(self) -> int:
        """Take new records in; returns how many came (jobs or not)."""
        received, jobs = self._intake.poll(len(self._live), self._scheduler.busy)
        self._take(jobs)
        return received

    def _release_due(self) -> None:
        self._take(self._intake.release_due())

    def _take(self, jobs: list[Job]) -> None:
        """Hold each new job: dead-letter a poison one, keep a join's branch, queue the rest."""
        for job in jobs:
            self._live.add(job)
            task = job.task
            if task is None:
                self._settle(job, outcomes.poisoned(self._context, job, clock.now_ms()))
            elif job.stage.join is not None and self._joins.is_arrival(job.tp[0], job.message):
                self._join_arrival(job)
            else:
                self._scheduler.admit(job)

    def _join_arrival(self, job: Job) -> None:
        """Keep a branch result; once every branch is in, run the join on all of them."""
        assert job.task is not None
        outcome = self._joins.arrive(job.tp, job.message, job.task, clock.now_ms())
        if isinstance(outcome, Rejected):
            event = Event.TASK_TYPE_UNKNOWN if outcome.reason == "unknown-branch" else \
                Event.RECORD_UNPRODUCIBLE
            job.task, job.lane = None, None
            job.poison = Poison(event, outcome.reason, outcome.detail)
            self._settle(job, outcomes.poisoned(self._context, job, clock.now_ms()))
        elif isinstance(outcome, Late):
            self.events.emit(Event.JOIN_LATE, stage=job.stage.name, fork=outcome.fork,
                             branch=outcome.branch, where=job.where)
            self._finish(job)
        elif isinstance(outcome, Stored):
            self.events.emit(Event.JOIN_BRANCH_STORED, stage=job.stage.name,
                             fork=outcome.fork, branch=outcome.branch)
            self._deliver(job, [outcome.record])
        else:
            self.events.emit(Event.JOIN_COMPLETED, stage=job.stage.name, fork=outcome.fork)
            job.task, job.lane = outcome.task, outcome.fork
            if outcome.value is not None:
                job.message = outcomes.Rewritten(job.message, outcome.value, outcome.fork)
            job.extra = (*job.extra, outcome.tombstone)
            self._scheduler.admit(job)

    def _expire_joins(self) -> None:
        for timed_out in self._joins.expire(clock.now_ms()):
            self.events.emit(Event.JOIN_TIMED_OUT, stage=timed_out.stage, fork=timed_out.fork,
                             missing=timed_out.missing, action=timed_out.action)
            # The fork leaves the changelog only once its dead letter (or partial join) is
            # durable: a crash in between restores the fork, which times out again.
            self._delivery.send_then(timed_out.record, timed_out.tombstone)

    # -- route the outcome and deliver it --------------------------------------------------

    def _route_ended(self, wait: float = 0.0) -> int:
        """Route the outcome of every execution that ended; returns how many."""
        ended = self._scheduler.ended(wait)
        if ended:
            report = self.events.wants(Event.TASK_SUCCEEDED)  # once per batch, not per task
            for job, result, error, seconds in ended:
                self._route(job, result, error, seconds, report)
        return len(ended)

    def _route_overdue(self) -> None:
        for job, result, error, seconds in self._scheduler.overdue():
            self._route(job, result, error, seconds)

    def _route(self, job: Job, result: Any, error: BaseException | None,
               seconds: float, report: bool = True) -> None:
        """Map a handler's outcome (after ``seconds`` of running) to what must become
        durable before its offset moves; ``report``: whether a subscriber reads the fields
        of ``task.succeeded`` (else it is only counted)."""
        if self._partitions.get(job.tp) is not job.partition:  # revoked: the new owner reruns it
            self._end(job)
            return
        task = job.task
        assert task is not None  # only tasks run
        span = self._span(job, seconds, error)
        if error is not None:
            outcome = outcomes.failed(self._context, job, task, error, seconds, clock.now_ms())
        else:
            outcome = outcomes.succeeded(self._context, job, task, result, span, seconds,
                                         clock.now_ms(), report)
        self._settle(job, outcome)

    def _span(self, job: Job, seconds: float, error: BaseException | None) -> str | None:
        """The execution's span id, when OpenTelemetry records spans. The SDK formats the
        user's exception and runs the user's span processors: neither may end the loop."""
        if self._spans is None:
            return None
        assert job.task is not None
        try:
            return self._spans.executed(job.task.headers, job.stage.name, job.task.attempt,
                                        f"{job.tp[0]}[{job.tp[1]}]", seconds, error)
        except BaseException as broken:  # user code (span processors) must not kill the worker
            log.warning("tracing failed for %s: %s", job.task.id, describe(broken))
            return None

    def _settle(self, job: Job, outcome: Outcome) -> None:
        """Report an outcome and make its records durable."""
        events = self.events
        for event, fields in outcome.events:
            if fields is None:
                events.tally(event)
            else:
                events.emit(event, **fields)
        self._deliver(job, outcome.records)

    def _deliver(self, job: Job, records: list[Outgoing]) -> None:
        """Send every record of an outcome (and the job's extra records). Should the producer
        refuse one, the task becomes a dead letter (records of the outcome sent before it
        stay sent: at least once)."""
        records = [*records, *job.extra]
        try:
            self._delivery.send(job, records)
        except ProduceRejected as error:
            if not error.about_record or job.stage.dlq_topic in {o.topic for o in records}:
                raise  # the producer, or even a dead letter, fails: stop; the task reruns
            self._settle(job, outcomes.unproducible(self._context, job, str(error),
                                                    clock.now_ms()))

    def _finish(self, job: Job) -> None:
        """The task's outcome is durable: its offset may be committed (the delivery calls
        this)."""
        self._durable_count += 1
        if self._partitions.get(job.tp) is job.partition:
            job.partition.finished(job.offset)
            self._finished_since_commit += 1
            self._intake.finished(job)
        self._live.discard(job)

    def _end(self, job: Job) -> None:
        self._live.discard(job)

    def _commit(self, asynchronous: bool = True,
                only: set[TopicPartition] | None = None) -> None:
        self._finished_since_commit = 0
        self._delivery.commit(asynchronous, only)

    # -- liveness ----------------------------------------------------------------------------

    def _recreate_stuck(self) -> None:
        """Close and re-create each consumer stuck out of its group, or fetching nothing
        while records wait, while the cluster answers (:mod:`streamtask.worker.liveness`).
        What it held counts as lost: its uncommitted tasks run again. The old one closes on
        a thread of its own, as closing a stuck client may itself hang, and its callbacks
        are ignored from now on."""
        stuck = [(c, s, "out of its group")
                 for c, s in self._group_watch.stuck(self._intake.consumers)]
        stuck += [(c, s, "fetches nothing while records wait")
                  for c, s in self._fetch_watch.stuck(self._intake.fetching())]
        for consumer, seconds, reason in stuck:
            group = self._group_id if consumer is self._intake.inputs \
                else f"{self._group_id}.retry"
            self._recreate(consumer)
            self.events.emit(Event.CONSUMER_RECREATED, group=group, reason=reason,
                             stuck_seconds=round(seconds, 1))

    def _recreate(self, consumer: Any) -> None:
        """Replace ``consumer`` by a new one; what it held counts as lost."""
        held = consumer.assignment()
        if held:
            self._on_lost(consumer, held)
        self._retired.add(consumer)
        self._group_watch.forget(consumer)
        self._fetch_watch.heard(consumer)
        self._delivery.attach(self._intake.reopen(consumer, self._subscribe, self._group_id))
        threading.Thread(target=_close_quietly, args=(consumer,), daemon=True,
                         name="streamtask-close-stuck-consumer").start()

    def _recreate_unacknowledged(self) -> None:
        """Re-create every client when each held task has only waited for acknowledgements,
        and none came, for the bound while the cluster answers (at-least-once: every held
        task runs again; exactly-once bounds its transactional calls instead). The old
        producer's records are purged and its reports never served."""
        delivery = self._delivery
        if not isinstance(delivery, AtLeastOnce):
            return
        only_sending = bool(self._live) and not self._scheduler.running \
            and all(job.pending_acks for job in self._live)
        seconds = self._delivery_watch.stuck(self._producer, only_sending,
                                             self._durable_count)
        if seconds is None:
            return
        for consumer in list(self._intake.consumers):
            self._recreate(consumer)
        for job in [job for job in self._live if not job.running]:
            self._end(job)
        self._producer = self.app.transport.producer(self.kafka)
        old = delivery.replace(self._producer)
        self._retired.add(old)
        try:
            old.purge()
        except Exception as error:  # a stuck client may refuse: it is never used again
            log.debug("purging a stuck producer failed: %s", describe(error))
        self.events.emit(Event.CLIENTS_RECREATED, reason="no acknowledgement while the "
                         "cluster answers", stuck_seconds=round(seconds, 1))

    # -- rebalance ---------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        if consumer in self._retired:
            return
        self._fetch_watch.heard(consumer)  # the quiet time counts from the new assignment
        self._just_assigned = True
        self._joins.restore((tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            self._partitions.setdefault((tp.topic, tp.partition), PartitionOffsets())
        self._scheduler.reshare(self._partitions)
        self._intake.assigned(consumer, partitions)
        self.events.emit(Event.PARTITIONS_ASSIGNED,
                         partitions=[f"{p.topic}[{p.partition}]" for p in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Finish (bounded) the revoked partitions' running tasks and commit before they go."""
        if consumer in self._retired:
            return
        revoked = {(p.topic, p.partition) for p in partitions}
        self._intake.held.drop(revoked)
        self._joins.drop(revoked)
        self._drop_waiting(lambda job: job.tp in revoked)
        self._drain(lambda: any(j.tp in revoked and (j.running or j.pending_acks)
                                for j in self._live))
        self._commit(asynchronous=False, only=revoked)
        self._delivery.forget(revoked)
        self._forget(revoked)
        self.events.emit(Event.PARTITIONS_REVOKED, partitions=names(revoked))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        if consumer in self._retired:
            return
        lost = {(p.topic, p.partition) for p in partitions}
        self._intake.held.drop(lost)
        self._joins.drop(lost)
        self._drop_waiting(lambda job: job.tp in lost)
        self._delivery.forget(lost)  # their tasks run again; what is held must never go out
        self._forget(lost)
        self.events.emit(Event.PARTITIONS_LOST, partitions=names(lost))

    def _forget(self, tps: set[TopicPartition]) -> None:
        # After the drain: tasks finishing during it may have paused a partition again.
        self._intake.forget(tps)
        for tp in tps:
            self._partitions.pop(tp, None)
        self._scheduler.reshare(self._partitions)
        for job in [j for j in self._live if j.tp in tps and not j.running]:
            self.events.emit(Event.TASK_ABANDONED, task_id=job.task.id if job.task else None,
                             where=job.where)
            self._end(job)

    def _drop_waiting(self, drop: Callable[[Job], bool]) -> None:
        """Forget tasks that have not started: they stay uncommitted and will be redelivered."""
        for job in self._scheduler.drop(drop):
            self._end(job)

    def _drain(self, busy: Callable[[], bool]) -> None:
        """Route outcomes while ``busy``, for the drain timeout at most (the shutdown's
        drains, its own and the revoke's inside the consumer's close, share one)."""
        deadline = self._stop_by or time.monotonic() + self.settings.drain_timeout
        while busy() and time.monotonic() < deadline:
            self._route_ended(wait=0.02)
            try:
                self._delivery.serve(0)
            except DeliveryFailed:  # latched: the loop raises it at its next serve
                return
            self._route_overdue()


def _close_quietly(consumer: Any) -> None:
    """Close a consumer replaced because it was stuck; it may fail or hang, harmlessly."""
    try:
        consumer.close()
    except Exception as error:  # a stuck client's close may fail: nothing depends on it
        log.debug("closing a stuck consumer failed: %s", describe(error))
