"""``streamtask.testing.run``: an app's real workers on an in-memory log, with a fake clock.

The run starts the app's stages as ``streamtask worker`` does, on a
:class:`~streamtask.worker.host.StageHost` (one :class:`~streamtask.worker.Worker` per stage
group, each on a thread; the host on one more), over
:class:`~streamtask.testing.clients.MemoryTransport` (or, with ``real=True``, over the app's
own Kafka cluster), and replaces the wall clock of :mod:`streamtask.clock` with one that
moves only when the test says so. A worker that fails stops the run's other workers, as it
stops the process's in production; the test sees its error at its next question. Routing, the retry
ladder, dead letters, joins, compensation and exactly-once are the worker's own code.

Every question a test asks (``results``, ``dead_letters``, ...) first *settles* the run:
it waits until each group has committed every record it reads, except retry records not
due yet at the fake time, every worker loop has gone round at the current time (so due
retries were released and timed-out joins expired), and no transaction holds unpublished
records. A run that does not settle in ``settle_timeout`` seconds (a handler that hangs)
raises :class:`NotSettled` saying what is still pending.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from streamtask import clock
from streamtask.config import WorkerSettings
from streamtask.errors import StreamtaskError
from streamtask.events import Event
from streamtask.kafka import clients as kafka
from streamtask.kafka import headers as dl
from streamtask.kafka import topics
from streamtask.kafka.producer import TaskProducer
from streamtask.model.app import App, Handler, Stage
from streamtask.model.envelope import Task
from streamtask.ops import deadletters as dlq
from streamtask.testing.clients import MemoryTransport
from streamtask.testing.timeline import Timeline
from streamtask.testing.views import KafkaView, LogView, MemoryView, Progress
from streamtask.testing.watch import WatchedTransport
from streamtask.worker.host import StageHost

_ONE_AT_A_TIME = threading.Lock()
"""The clock is process-wide: two runs at once would move each other's time."""


class NotSettled(StreamtaskError):
    """The run still had work pending when its settle timeout ran out."""


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter of a stage, as the worker wrote it to the stage's DLQ topic."""

    reason: str
    """Why: ``exhausted``, ``non-retryable``, ``poison:undecodable``, ``join-timeout``..."""
    error: str
    """The error's message as the worker recorded it (``Type: message``)."""
    error_type: str
    attempts: int
    task: Task | None
    """The task as last attempted; None for a record that never decoded into a task."""
    record: dl.DeadLetterRecord


class TestRun:
    """A running app under test; get one from :func:`run`."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, app: App, *, real: bool, settings: WorkerSettings | None,
                 settle_timeout: float) -> None:
        self.app = app
        self.settle_timeout = settle_timeout
        self._real = real
        self._now_ns = time.time_ns() // 1_000_000 * 1_000_000
        self._memory = None if real else MemoryTransport()
        self._timeline = Timeline(self.now_ms) if real else None
        self._transport = WatchedTransport(self._memory or kafka.KAFKA, self._timeline)
        base = settings or WorkerSettings()
        self._settings = dataclasses.replace(
            base, commit_interval=min(base.commit_interval, 0.05),
            drain_timeout=min(base.drain_timeout, 2.0))
        self._lock = threading.Lock()
        self._returned: dict[tuple[str, int], Any] = {}
        self._results: dict[str, list[Any]] = defaultdict(list)
        self._executions: dict[str, list[Task]] = defaultdict(list)
        self._deferred: dict[tuple[str, int, int], int] = {}
        self._forks: dict[tuple[str, str], int] = {}
        self._errors: list[BaseException] = []
        self._groups = _groups(app)
        self._host: StageHost | None = None
        self._thread: threading.Thread | None = None
        self._original: tuple[Any, dict[str, Stage], Any] | None = None
        self._view: LogView | None = None
        self._producer: TaskProducer | None = None

    # -- the test's side ---------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The fake time, in epoch milliseconds (it starts at the real time)."""
        return self._now_ns // 1_000_000

    def send(self, stage: str, payload: Any, *, key: str | None = None,
             headers: Mapping[str, str] | None = None, delay: float | None = None) -> str:
        """Send one task to ``stage`` as a service would (``app.send``); returns its id."""
        assert self._producer is not None, "the run is not started"
        future = self._producer.send(stage, payload, key=key, headers=headers, delay=delay)
        self._producer.flush(30.0)
        return future.result().task_id

    def produce(self, topic: str, value: bytes | None, *, key: str | None = None,
                headers: list[tuple[str, bytes | None]] | None = None) -> None:
        """Write a raw record to ``topic`` (a poison record, a record from another system)."""
        client = self._transport.producer(self.app.kafka)
        kafka.produce(client, topic, value, key, headers=headers)
        client.flush(30.0)

    def advance(self, seconds: float) -> None:
        """Move the fake clock ``seconds`` forward; every retry, delayed task and join
        timeout due meanwhile runs, in due order, each at its own due time. Durations the
        worker measures itself (a stage's ``timeout``, commit intervals) stay in real time."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward; cannot advance {seconds}s")
        target = self._now_ns + round(seconds * 1e9)
        self.settle()
        while True:
            due = self._next_due()
            if due is None or due * 1_000_000 > target:
                break
            self._set_time(due * 1_000_000)
            self.settle()
        self._set_time(target)
        self.settle()

    def settle(self, timeout: float | None = None) -> None:
        """Wait until nothing is in flight and nothing is due; see the module's doc."""
        limit = self.settle_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        start = [c.turns for c in self._transport.consumers]
        while True:
            self.raise_worker_error()
            pending = self._pending(start)
            if not pending:
                return
            if self._memory is not None:
                self._memory.log.wake()  # idle loops wait in poll: make them go round
            if time.monotonic() >= deadline:
                raise NotSettled(f"the app did not settle within {limit:g}s: "
                                 + "; ".join(pending[:10]))
            time.sleep(0.002)

    def results(self, stage: str) -> list[Any]:
        """What ``stage``'s handler returned, for each execution that succeeded (its result
        was routed on), in the order the worker routed them."""
        self.app.get_stage(stage)
        self.settle()
        with self._lock:
            return list(self._results[stage])

    def executions(self, stage: str) -> list[Task]:
        """Every task ``stage``'s handler was called with, retries included, in call order."""
        self.app.get_stage(stage)
        self.settle()
        with self._lock:
            return list(self._executions[stage])

    def dead_letters(self, stage: str) -> list[DeadLetter]:
        """The dead letters in ``stage``'s DLQ topic, oldest first."""
        found = self.app.get_stage(stage)
        self.settle()
        assert self._view is not None
        letters = []
        for message in self._view.records(found.dlq_topic):
            record = dlq.record_of(message)
            decoded = dlq.decode(found, self.app.codec, record)
            letters.append(DeadLetter(record.reason, record.message, record.error_type,
                                      record.attempts, decoded.task, record))
        return sorted(letters, key=lambda d: (d.record.dead_at, d.record.dlq_partition,
                                              d.record.dlq_offset))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Replace the app's transport, handlers and the clock; start one worker per group."""
        if not _ONE_AT_A_TIME.acquire(blocking=False):
            raise StreamtaskError("another streamtask.testing run is active in this process; "
                                  "runs share the clock, so run them one after the other")
        # app.send's shared producer too: one made during the run (a handler that sends
        # tasks) writes to this run's log and must not outlive it.
        self._original = (self.app.transport, dict(self.app.stages), self.app._producer)
        self.app._producer = None
        try:
            self._install()
            self._host = StageHost(self.app, settings=self._settings)
            self._host.subscribe(self._observe, inline=True)  # settled means observed
            self._thread = threading.Thread(target=self._work, args=(self._host,), daemon=True,
                                            name="streamtask-testing")
            self._thread.start()
        except BaseException:
            self.close()
            raise

    def _install(self) -> None:
        app = self.app
        app.transport = self._transport
        for name, stage in list(app.stages.items()):
            app.stages[name] = dataclasses.replace(stage, handler=self._recording(stage))
        clock.set_source(lambda: self._now_ns)
        if self._memory is not None:
            for spec in topics.app_topics(app):
                self._memory.log.create(spec.name, spec.partitions)
            self._view = MemoryView(self._memory.log)
        else:
            topics.ensure(app)
            self._view = KafkaView(app.kafka, app.name)
        self._producer = TaskProducer(app)

    def close(self) -> None:
        """Stop the workers (they drain and commit), then give the app back its transport,
        handlers and the real clock."""
        try:
            if self._host is not None and self._thread is not None:
                self._host.stop()
                self._thread.join(self._settings.drain_timeout + 10.0)
            if self._view is not None:
                self._view.close()
        finally:
            if self._original is not None:
                self.app.transport, stages, self.app._producer = self._original
                self.app.stages.clear()
                self.app.stages.update(stages)
                self._original = None
                clock.set_source(None)
                _ONE_AT_A_TIME.release()

    def raise_worker_error(self) -> None:
        """Raise what ended a worker, if one ended (say, a delivery failure)."""
        with self._lock:
            if self._errors:
                error = self._errors[0]
                raise StreamtaskError(f"a worker stopped: {error}") from error

    # -- inside ------------------------------------------------------------------------------

    def _work(self, host: StageHost) -> None:
        try:
            host.run()
        except BaseException as error:  # reported in the test's thread by settle
            with self._lock:
                self._errors.append(error)

    def _recording(self, stage: Stage) -> Handler:
        """The stage's handler, noting each call and what it returned; the worker sees the
        same function signature and async-ness."""
        handler = stage.handler

        def called(task: Task) -> None:
            with self._lock:
                self._executions[stage.name].append(task)

        def returned(task: Task, result: Any) -> Any:
            with self._lock:
                self._returned[(task.id, task.attempt)] = result
            return result

        if stage.is_async:
            async def recorded_async(task: Task) -> Any:
                called(task)
                return returned(task, await handler(task))

            return recorded_async

        def recorded(task: Task) -> Any:
            called(task)
            return returned(task, handler(task))

        return recorded

    def _observe(self, event: Event, fields: dict[str, Any]) -> None:
        """Results, held retries and waiting joins, from the workers' events."""
        with self._lock:
            if event is Event.TASK_SUCCEEDED:
                key = (fields["task_id"], fields["attempt"])
                self._results[fields["stage"]].append(self._returned.pop(key, None))
            elif event is Event.TASK_DEFERRED:
                self._deferred[_coordinates(fields["where"])] = int(fields["due"])
            elif event is Event.JOIN_BRANCH_STORED:
                self._forks.setdefault((fields["stage"], fields["fork"]), clock.now_ms())
            elif event in (Event.JOIN_COMPLETED, Event.JOIN_TIMED_OUT):
                self._forks.pop((fields["stage"], fields["fork"]), None)

    def _set_time(self, now_ns: int) -> None:
        self._now_ns = max(self._now_ns, now_ns)
        if self._timeline is not None:
            self._timeline.moved(self.now_ms)
        if self._memory is not None:
            self._memory.log.wake()

    def _pending(self, turns_at_start: list[int]) -> list[str]:
        """What keeps the run from being settled (nothing: it is settled)."""
        consumers = self._transport.consumers
        pending = [f"worker for group {c.group} has no partitions yet"
                   for c in consumers if not c.assigned]
        if len(consumers) < len(self._groups_read()):
            pending.append("workers are starting")
        if pending:
            return pending
        if any(c.turns < start + 2 for c, start in zip(consumers, turns_at_start, strict=False)):
            return ["worker loops have not gone round at the current time"]
        if self._transport.unpublished():
            return ["a transaction holds records not yet committed"]
        assert self._view is not None
        progress = self._view.progress(self._groups_read())
        if progress is None:
            return ["records are being written"]
        return self._unfinished(progress)

    def _unfinished(self, progress: dict[str, Progress]) -> list[str]:
        now = self.now_ms
        pending = []
        with self._lock:
            deferred = dict(self._deferred)
        for group, partitions in progress.items():
            for (topic, partition), (committed, end) in partitions.items():
                if committed >= end:
                    continue
                due = deferred.get((topic, partition, committed))
                if due is not None and due > now:
                    continue  # a retry waiting for its time, and the records behind it
                pending.append(f"{topic}[{partition}]: group {group} committed {committed} "
                               f"of {end}{self._running(group)}")
        return pending

    def _running(self, group: str) -> str:
        workers = self._host.workers if self._host is not None else []
        running = sum(w.in_flight for w in workers
                      if group.removesuffix(".retry") == w.stages[0].group)
        return f" ({running} handler(s) running)" if running else ""

    def _groups_read(self) -> dict[str, list[str]]:
        """Each consumer group of the run with the topics it reads."""
        read: dict[str, list[str]] = {}
        for group, names in self._groups.items():
            stages = [self.app.get_stage(name) for name in names]
            read[group] = [stage.topic for stage in stages]
            retries = sorted(t for stage in stages for t in stage.retry_topics)
            if retries:
                read[f"{group}.retry"] = retries
        return read

    def _next_due(self) -> int | None:
        """The earliest time (epoch ms, after now) something held becomes due: a retry
        record not yet run, or a waiting join's timeout."""
        now = self.now_ms
        assert self._view is not None
        progress = self._view.progress(self._groups_read()) or {}
        committed = {tp: c for partitions in progress.values()
                     for tp, (c, _end) in partitions.items()}
        with self._lock:
            dues = [due for (topic, partition, offset), due in self._deferred.items()
                    if due > now and offset >= committed.get((topic, partition), 0)]
            for (stage, _fork), first_at in self._forks.items():
                join = self.app.get_stage(stage).join
                if join is not None:
                    # A worker looks for timed-out joins once a second (of its clock).
                    dues.append(max(first_at + round(join.timeout * 1000), now + 1000))
        return min(dues, default=None)


def _groups(app: App) -> dict[str, list[str]]:
    """The app's stages by consumer group (the group's Workers, exactly-once or not, read
    their topics together)."""
    groups: dict[str, list[str]] = {}
    for name, stage in app.stages.items():
        groups.setdefault(stage.group, []).append(name)
    return groups


def _coordinates(where: str) -> tuple[str, int, int]:
    """``topic[partition]@offset`` as a tuple."""
    topic, rest = where.rsplit("[", 1)
    partition, offset = rest.split("]@")
    return topic, int(partition), int(offset)


@contextmanager
def run(app: App, *, real: bool = False, settings: WorkerSettings | None = None,
        settle_timeout: float | None = None) -> Iterator[TestRun]:
    """Run ``app``'s stages for a test: in memory with a fake clock (``real=True``: on the
    app's Kafka cluster, still with the fake clock).

    While the block runs, ``app.transport``, the stages' handlers (wrapped to record what
    they return) and :mod:`streamtask.clock` are replaced; all three are restored on exit,
    after the workers drained and stopped. ``settings`` tunes the workers (commits are made
    every 50 ms at most, so that settling is quick). ``settle_timeout`` bounds each wait for
    the run to settle (default 10 s in memory, 60 s on a cluster).
    """
    timeout = settle_timeout if settle_timeout is not None else 60.0 if real else 10.0
    test = TestRun(app, real=real, settings=settings, settle_timeout=timeout)
    test.start()
    try:
        yield test
    finally:
        test.close()
    test.raise_worker_error()


