"""Intake: the records a worker takes in, turned into jobs.

It owns the worker's consumers (one for the stages' inputs, one for their retry levels, each
its own group: one group over both would let the assignor hand all input partitions to one
worker and all retry partitions to another, since it balances partition counts, not topics),
polls them without ever taking more than the held-work limit leaves room for (flow control),
holds retry records until they are due (:mod:`streamtask.worker.delays`), and decodes each
record into a :class:`~streamtask.worker.job.Job`, or a poison job for the dead-letter queue
when no handler can run it. It pauses and resumes partitions for all three reasons (a full
worker, held retries, the held window) and resumes one only when no reason is left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streamtask import clock
from streamtask.config import WorkerSettings
from streamtask.errors import DecodeError
from streamtask.events import Event, EventBus
from streamtask.kafka import clients as kafka
from streamtask.model.app import Stage
from streamtask.model.envelope import EnvelopeCodec
from streamtask.worker.delays import HeldRecords
from streamtask.worker.job import Job, Poison, TopicPartition
from streamtask.worker.offsets import PartitionOffsets
from streamtask.worker.outcomes import due_time, retry_overrides
from streamtask.worker.window import HeldWindow

log = logging.getLogger("streamtask.worker")
PAUSE_WHEN_FULL_FOR = 5.0
"""Seconds a full worker waits before pausing its partitions (see ``Intake._flow_control``)."""

Subscribe = Callable[[str, list[str]], Any]
"""Opens a consumer of a group on topics (the worker's, with its rebalance callbacks)."""


class Intake:
    """The consumers of one worker and what they hand over, as jobs."""

    def __init__(self, stages: Iterable[Stage], codec: EnvelopeCodec, settings: WorkerSettings,
                 partitions: Mapping[TopicPartition, PartitionOffsets],
                 events: EventBus) -> None:
        stages = list(stages)
        self._codec = codec
        self._settings = settings
        self._partitions = partitions
        self._events = events
        self._by_topic = {topic: stage for stage in stages
                          for topic in (stage.topic, *stage.retry_topics)}
        self._retry_delays = {topic: delay for stage in stages
                              for topic, delay in stage.retry_topics.items()}
        self._inputs = [stage.topic for stage in stages]
        self.held = HeldRecords()
        self.window = HeldWindow(settings.max_buffered)
        self.inputs: Any = None
        """The consumer of the stages' input topics."""
        self.retries: Any = None
        """The consumer of their retry levels (None when no stage has one)."""
        self._owner: dict[str, Any] = {}
        self.paused = False
        """Every partition paused because the worker stayed full (see ``_flow_control``)."""
        self._full_since: float | None = None
        self.heard: Callable[[Any], None] = lambda _consumer: None
        """Told of each consumer that handed out records (the worker's liveness watch)."""

    @property
    def topics(self) -> list[str]:
        """Every topic taken in: the stages' inputs and their retry levels."""
        return list(self._by_topic)

    @property
    def retry_topics(self) -> frozenset[str]:
        return frozenset(self._retry_delays)

    @property
    def consumers(self) -> list[Any]:
        return [c for c in (self.inputs, self.retries) if c is not None]

    def open(self, subscribe: Subscribe, group: str) -> dict[str, Any]:
        """Open the consumers; returns which consumer owns each topic (commits use it)."""
        self.inputs = subscribe(group, self._inputs)
        if self._retry_delays:
            self.retries = subscribe(f"{group}.retry", sorted(self._retry_delays))
        return self._owners()

    def reopen(self, old: Any, subscribe: Subscribe, group: str) -> dict[str, Any]:
        """Replace the consumer ``old`` (stuck: :mod:`streamtask.worker.liveness`) with a new
        one of the same group and topics; returns the new owners. Closing ``old`` is the
        caller's."""
        if old is self.inputs:
            self.inputs = subscribe(group, self._inputs)
        elif old is self.retries:
            self.retries = subscribe(f"{group}.retry", sorted(self._retry_delays))
        return self._owners()

    def _owners(self) -> dict[str, Any]:
        self._owner = {topic: self.retries if topic in self._retry_delays else self.inputs
                       for topic in self._by_topic}
        return self._owner

    # -- poll ----------------------------------------------------------------------------

    def poll(self, live: int, busy: bool) -> tuple[int, list[Job]]:
        """Take what the consumers have (``live`` jobs held, ``busy`` with runnable work):
        how many records came, and the jobs made of them."""
        # consume() waits for a *full* batch until its timeout, so take what is queued without
        # waiting, and block (briefly) only in poll(), which returns on the first record.
        # With handlers running, the loop waits on their completions instead.
        # Never take more than the held-work limit leaves room for.
        held = max(live, self.window.held(self._partitions))
        room = min(self._settings.poll_batch, self._settings.max_buffered - held)
        if not self._flow_control(room):
            return 0, []
        room = max(1, room)
        messages = self._queued(room)
        wait = 0.0 if busy else 0.005 if live else 0.1
        if self.retries is not None:  # the blocking poll below only watches the inputs
            wait = min(wait, 0.02)
        until_due = self.held.seconds_until_next(clock.now_ms())
        if until_due is not None:
            wait = min(wait, until_due)
        if not messages and wait:
            first = self.inputs.poll(wait)
            if first is not None:
                self.heard(self.inputs)
            if first is not None and room > 1:
                messages = [first, *self.inputs.consume(room - 1, 0)]
            elif first is not None:
                messages = [first]
        return len(messages), self._receive(messages)

    def _queued(self, room: int) -> list[Any]:
        """Up to ``room`` records the consumers already hold, without waiting."""
        messages = []
        if self.retries is not None:  # retries first, so a busy input cannot starve them
            messages = self.retries.consume(max(1, room // 2), 0)
            if messages:
                self.heard(self.retries)
        inputs = self.inputs.consume(max(1, room - len(messages)), 0)
        if inputs:
            self.heard(self.inputs)
            messages += inputs
        return messages

    def _receive(self, messages: list[Any]) -> list[Job]:
        jobs = []
        partitions, retry_delays, accept = self._partitions, self._retry_delays, self.accept
        for message in messages:
            if message.error() is not None:
                self._on_consumer_error(message.error())
                continue
            tp = (message.topic(), message.partition())
            offsets = partitions.get(tp)
            if offsets is None:  # a record of a partition we no longer own
                continue
            if tp[0] in retry_delays and self._hold_if_early(tp, message):
                continue
            job = accept(tp, offsets, message)
            if job is not None:
                jobs.append(job)
        return jobs

    @staticmethod
    def _on_consumer_error(error: Any) -> None:
        if error.fatal():
            kafka.raise_for(error, "consumer failed")
        log.warning("consumer error: %s", error.str())

    def accept(self, tp: TopicPartition, offsets: PartitionOffsets, message: Any) -> Job | None:
        """Decode a record into its job (a poison job if no handler can run it); None for
        a record already received."""
        offset = message.offset()
        if not offsets.received(offset):
            return None  # redelivered after pause/resume: we already hold it
        stage = self._by_topic[tp[0]]
        value = message.value() or b""
        if len(value) > stage.max_payload_bytes:
            return self._poison(tp, offsets, stage, message, Poison(
                Event.RECORD_OVERSIZE, "oversize", f"record of {len(value)} bytes exceeds "
                f"max_payload_bytes={stage.max_payload_bytes}"))
        try:
            if tp[0] in self._retry_delays:
                task = self._codec.decode(value, **retry_overrides(message.headers()))
            else:
                task = self._codec.decode(value)
        except DecodeError as error:
            return self._poison(tp, offsets, stage, message,
                                Poison(Event.RECORD_UNDECODABLE, "undecodable", str(error)))
        if task.type != stage.name:
            return self._poison(tp, offsets, stage, message, Poison(
                Event.TASK_TYPE_UNKNOWN, "unknown-task-type",
                f"task type {task.type!r} is not handled on {tp[0]}"))
        return Job(tp, offset, message.key() or task.id, task, stage, offsets, message)

    @staticmethod
    def _poison(tp: TopicPartition, offsets: PartitionOffsets, stage: Stage, message: Any,
                poison: Poison) -> Job:
        return Job(tp, message.offset(), None, None, stage, offsets, message, poison=poison)

    # -- held retries --------------------------------------------------------------------

    def _hold_if_early(self, tp: TopicPartition, message: Any) -> bool:
        """Hold a retry level's record (and its partition) until the record is due."""
        due = due_time(message.headers()) or 0
        # A due time past the level's delay (and any jitter) since the record was written is
        # a corrupt header: it would hold the level forever. It waits out the delay instead.
        latest = message.timestamp()[1] + round(self._retry_delays[tp[0]] * 2000) + 60_000
        due = min(due, latest)
        if tp not in self.held and due <= clock.now_ms():
            return False
        # Records behind a held one wait their turn, in offset order.
        if self.held.hold(tp, due, message):
            self.pause(tp)
        self._events.emit(Event.TASK_DEFERRED, where=f"{tp[0]}[{tp[1]}]@{message.offset()}",
                          due=due)
        return True

    def release_due(self) -> list[Job]:
        """Jobs of the held retry records now due (and resume partitions they paused)."""
        ready, resume = self.held.release(clock.now_ms())
        jobs = []
        for message in ready:
            tp = (message.topic(), message.partition())
            offsets = self._partitions.get(tp)
            if offsets is not None:
                job = self.accept(tp, offsets, message)
                if job is not None:
                    jobs.append(job)
        for tp in resume:
            self.resume_if_free(tp)
        return jobs

    # -- pause and resume ----------------------------------------------------------------

    def pause(self, tp: TopicPartition) -> None:
        self._owner[tp[0]].pause([kafka.TopicPartition(*tp)])

    def resume_if_free(self, tp: TopicPartition) -> None:
        """Resume a partition that no pause holds any longer (full, held retries, window)."""
        if tp in self._partitions and not self.paused and tp not in self.held.paused \
                and tp not in self.window.paused:
            self._owner[tp[0]].resume([kafka.TopicPartition(*tp)])

    def finished(self, job: Job) -> None:
        """``job``'s offset is durable: pause or resume its partition for the held window."""
        if self.window.overfull(job.tp, job.partition):
            self.pause(job.tp)
        elif self.window.drained(job.tp, job.partition):
            self.resume_if_free(job.tp)

    def fetching(self) -> list[tuple[Any, list[Any]]]:
        """Each consumer with the partitions it should be fetching from now: none while the
        worker is full, else those assigned that no pause holds."""
        if self.paused or self._full_since is not None:
            return [(consumer, []) for consumer in self.consumers]
        held = self.held.paused | self.window.paused
        return [(consumer, [tp for tp in consumer.assignment()
                            if (tp.topic, tp.partition) not in held])
                for consumer in self.consumers]

    @property
    def full(self) -> bool:
        """Refusing records for want of room, partitions not paused yet."""
        return self._full_since is not None and not self.paused

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
            if self.paused:
                held = self.held.paused | self.window.paused
                for consumer in self.consumers:
                    consumer.resume([tp for tp in consumer.assignment()
                                     if (tp.topic, tp.partition) not in held])
                self.paused = False
            return True
        if self._full_since is None:
            self._full_since = now
        if not self.paused and now - self._full_since >= PAUSE_WHEN_FULL_FOR:
            for consumer in self.consumers:
                consumer.pause(consumer.assignment())
            self.paused = True
        return self.paused  # paused: poll for callbacks, no record can come

    def assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """librdkafka keeps a partition's pause flag while it is revoked or lost and applies
        it when the partition comes back; the intake's own pause state (flow control, held
        retries) was reset for it meanwhile, so set the flag to match, both ways."""
        if self.paused:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)

    def forget(self, tps: set[TopicPartition]) -> None:
        """Partitions that left: their held records are redelivered (uncommitted), and their
        pauses reset when they come back."""
        self.held.drop(tps)
        self.window.drop(tps)

    def stop(self) -> None:
        """Stop fetching (shutdown): pause everything assigned."""
        for consumer in self.consumers:
            assignment = consumer.assignment()
            if assignment:
                consumer.pause(assignment)

    def close(self) -> None:
        """Leave the groups."""
        for consumer in self.consumers:
            consumer.close()
