"""One process, many stages: a :class:`~streamtask.worker.Worker` per stage group, each on
a thread of its own.

A Conductor or Celery worker serves many task types in one process; a streamtask stage keeps
its own consumer group so that stages scale independently. :class:`StageHost` gives both: it
makes one Worker per (consumer group, delivery mode) of the stages it runs, and runs each
Worker's loop on its own thread with its own runner threads, Kafka clients, held window and
drain. So concurrency, flow control and shutdown stay what they are for one stage, and a slow
stage fills only its own threads and window: the others go on (the GIL is shared, so a
CPU-bound handler slows the whole process; handlers that wait do not).

The host, not the Workers, applies ``max_tasks`` and ``idle_timeout``, to the process as a
whole: one Worker stopping idle while another still feeds its topic would strand that work.

A Worker whose loop raises (a broker or transaction error) ends the whole process: the other
Workers drain and stop, and :meth:`StageHost.run` raises. A process left running some of its
stages would look alive to its supervisor while the failed stage's partitions sit unserved
in its group; exiting lets the supervisor restart it, and the uncommitted tasks run again.

Event subscribers added with :meth:`StageHost.subscribe` see every Worker's events. Each runs
detached by default, on a thread of its own behind a bounded queue
(:mod:`streamtask.dispatcher`): a subscriber that blocks (the trail producing to a topic
whose leader is gone, a user's subscriber that sleeps) holds up no stage, and the events it
cannot keep up with are dropped and counted (:attr:`StageHost.events_dropped`, the metric
``streamtask_events_dropped_total``). It is still called from one thread only, so a
subscriber written for one Worker's thread (the trail's buffer) works unchanged. An
``inline`` subscriber (the metrics: dict updates, never a wait) runs on the Workers' loop
threads, one call at a time under a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.dispatcher import BACKLOG
from streamtask.errors import ConfigurationError, StreamtaskError
from streamtask.events import Event, EventBus, Subscriber
from streamtask.kafka.headers import describe
from streamtask.model.app import App, Stage
from streamtask.worker import Worker, WorkerStats

log = logging.getLogger("streamtask.worker.host")
JOIN_GRACE = 30.0
"""Seconds an ``idle_timeout`` run also waits while a Worker has no partitions yet."""
STOP_SLACK = 30.0
"""Seconds a stopping Worker may take beyond its drain timeout (final commit, closing its
clients, flushing its producer) before the host gives up waiting for it."""
SUBSCRIBERS_CLOSE = 1.0
"""Seconds the host waits for its detached subscribers once every Worker stopped: each Worker
already waited for them (``worker.SUBSCRIBERS_TIMEOUT``) as it stopped."""
_ENDED = frozenset({Event.TASK_SUCCEEDED, Event.TASK_RETRIED, Event.TASK_DEAD_LETTERED,
                    Event.JOIN_BRANCH_STORED, Event.JOIN_LATE})
"""Events that end a task, as a Worker counts them for ``max_tasks``."""
_QUIET = frozenset({Event.OFFSETS_COMMITTED, Event.OFFSETS_COMMIT_ACKNOWLEDGED,
                    Event.OFFSETS_COMMIT_FAILED, Event.WORKER_STARTED, Event.WORKER_STOPPING,
                    Event.WORKER_STOPPED})
"""Events that are no sign of work (idle time goes on through them)."""


class StageFailed(StreamtaskError):
    """A stage's Worker stopped with an error; the process's other stages were stopped too."""


def plan(app: App, stages: Sequence[str] | None = None) -> list[list[Stage]]:
    """The stages to run (all of ``app``'s when ``stages`` is empty), grouped as Workers
    run them: one group per (consumer group, exactly-once or not), in declaration order.

    Raises :class:`ConfigurationError` for a name the app does not declare.
    """
    chosen = ([app.get_stage(name) for name in dict.fromkeys(stages)] if stages
              else list(app.stages.values()))
    if not chosen:
        raise ConfigurationError(f"app {app.name!r} declares no stages to run")
    groups: dict[tuple[str, bool], list[Stage]] = {}
    for stage in chosen:
        groups.setdefault((stage.group, stage.exactly_once), []).append(stage)
    return list(groups.values())


class _Progress:
    """Subscriber on one Worker's own bus (so it runs on that Worker's loop thread): what
    the host's ``max_tasks`` and ``idle_timeout`` read from the monitoring thread."""

    def __init__(self, on_ended: Callable[[], None]) -> None:
        self.on_ended = on_ended
        self.last_activity = time.monotonic()
        self.partitions: set[str] = set()

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        if event in _ENDED:
            self.on_ended()
        if event in _QUIET:
            return
        self.last_activity = time.monotonic()
        if event is Event.PARTITIONS_ASSIGNED:
            self.partitions.update(fields["partitions"])
        elif event in (Event.PARTITIONS_REVOKED, Event.PARTITIONS_LOST):
            self.partitions.difference_update(fields["partitions"])


class _Serialized:
    """An inline subscriber called by one Worker thread at a time."""

    def __init__(self, subscriber: Subscriber, lock: threading.Lock) -> None:
        self._subscriber = subscriber
        self._lock = lock

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        with self._lock:
            self._subscriber(event, fields)


class StageHost:
    """Runs any set of an app's stages in this process, one Worker per stage group."""

    def __init__(self, app: App, stages: Sequence[str] | None = None,
                 settings: WorkerSettings | None = None,
                 kafka_settings: KafkaSettings | None = None) -> None:
        """``stages``: names to run (default: all). ``settings`` apply to each Worker, so
        ``concurrency`` is per stage group, as it would be in a process of its own."""
        self.app = app
        self.settings = settings or WorkerSettings()
        self._relay = EventBus()
        self._subscribers_lock = threading.Lock()
        self._ended_lock = threading.Lock()
        self._ended = 0
        self._max_tasks: int | None = None
        self._wake = threading.Event()
        """Set by Worker threads (never by a signal handler: see :meth:`stop`)."""
        self._stopping = False
        self._failures: list[tuple[Worker, BaseException]] = []
        self._stuck: list[str] = []
        """Threads of Workers that did not stop within the drain timeout and its slack."""
        self._stats: dict[int, WorkerStats] = {}
        self.workers = [Worker(app, [stage.name for stage in group], self.settings,
                               kafka_settings, events=self._relay)
                        for group in plan(app, stages)]
        self._progress = [_Progress(self._task_ended) for _ in self.workers]
        for worker, progress in zip(self.workers, self._progress, strict=True):
            worker.events.subscribe(progress, inline=True)

    @property
    def worker_id(self) -> str:
        """``host-pid``, the same for every Worker of the process (their Kafka client id)."""
        return self.workers[0].worker_id

    @property
    def in_flight(self) -> int:
        """Tasks handlers of every stage are executing now (read from any thread)."""
        return sum(worker.in_flight for worker in self.workers)

    @property
    def held(self) -> int:
        """Tasks received and not finished, and retry records held, over every stage."""
        return sum(worker.held for worker in self.workers)

    @property
    def events_dropped(self) -> dict[str, int]:
        """Events each detached subscriber missed so far because it was too far behind."""
        return self._relay.dropped()

    def subscribe(self, subscriber: Subscriber, *, inline: bool = False,
                  backlog: int = BACKLOG) -> None:
        """Receive every Worker's events, one event at a time; subscribe before :meth:`run`.

        Detached (the default), ``subscriber`` runs on a thread of its own and may fall
        ``backlog`` events behind before events are dropped for it; ``inline`` only for one
        that is cheap and never waits (see the module's doc).
        """
        if inline:
            self._relay.subscribe(_Serialized(subscriber, self._subscribers_lock), inline=True)
        else:
            self._relay.subscribe(subscriber, backlog=backlog)

    def stop(self) -> None:
        """Ask every Worker to drain and exit; safe from a signal handler or any thread.

        It only sets a flag that :meth:`run` looks at every 0.1 s: a signal handler runs on
        the main thread between two bytecodes, possibly inside a lock that thread holds
        (an Event's), and taking that lock again there would hang the process.
        """
        self._stopping = True

    def _stop_workers(self) -> None:
        self._stopping = True
        for worker in self.workers:
            worker.stop()

    # -- run ---------------------------------------------------------------------------------

    def run(self, *, max_tasks: int | None = None,
            idle_timeout: float | None = None) -> WorkerStats:
        """Run every Worker until stopped, until ``max_tasks`` tasks ended over all stages,
        or until no stage had work for ``idle_timeout`` seconds; returns the summed counts.

        Raises the error of a Worker that failed (with several Workers, as
        :class:`StageFailed` naming its stages) once every other Worker has stopped.
        """
        self._max_tasks = max_tasks
        threads = [threading.Thread(target=self._run_worker, args=(worker,), daemon=True,
                                    name=f"streamtask:{'+'.join(s.name for s in worker.stages)}")
                   for worker in self.workers]
        for thread in threads:
            thread.start()
        try:
            self._watch(threads, idle_timeout)
        finally:
            self._stop_workers()
            self._join(threads)
            self._relay.close(SUBSCRIBERS_CLOSE)
        self._raise_failure()
        counts: Counter[str] = Counter()
        for stats in self._stats.values():
            counts.update(stats.counts)
        return WorkerStats(dict(counts))

    def _run_worker(self, worker: Worker) -> None:
        try:
            self._stats[id(worker)] = worker.run()
        except BaseException as error:  # reported by run() on the host's thread
            self._failures.append((worker, error))
        finally:
            self._wake.set()

    def _watch(self, threads: list[threading.Thread], idle_timeout: float | None) -> None:
        """Wait until stopped, a Worker ended (failed, or its run returned) or all idled."""
        while not self._stopping:
            self._wake.wait(0.1)
            self._wake.clear()
            if self._failures or not all(thread.is_alive() for thread in threads):
                return
            if idle_timeout is not None and self._idle_for() >= idle_timeout + self._grace():
                return

    def _idle_for(self) -> float:
        now = time.monotonic()
        if self.held:  # tasks running, waiting for acknowledgements, or retries held
            for progress in self._progress:
                progress.last_activity = now
        return now - max(progress.last_activity for progress in self._progress)

    def _grace(self) -> float:
        """Joining a group can take a while: idle time counts once every Worker has
        partitions, or once it has waited :data:`JOIN_GRACE` more for them."""
        return 0.0 if all(progress.partitions for progress in self._progress) else JOIN_GRACE

    def _task_ended(self) -> None:
        """Called on a Worker's thread for each ended task: stop all at ``max_tasks``."""
        if self._max_tasks is None:
            return
        with self._ended_lock:
            self._ended += 1
            if self._ended >= self._max_tasks:
                self._stop_workers()  # this Worker stops in this very loop iteration

    def _join(self, threads: list[threading.Thread]) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout + STOP_SLACK
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("host.stop_timeout %s did not stop in time; exiting without it",
                          thread.name, extra={"event": "host.stop_timeout",
                                              "fields": {"thread": thread.name}})
                # Not a clean stop: its consumer never left the group, its producer may hold
                # records. Exit non-zero so a supervisor or operator sees it.
                self._stuck.append(thread.name)

    def _raise_failure(self) -> None:
        """Raise the first Worker's error: as it is when the process runs one Worker, else
        as one :class:`StageFailed` line that names the stages it served. A Worker that did
        not stop in time is a failure too."""
        if not self._failures and self._stuck:
            raise StageFailed(f"stage(s) {', '.join(self._stuck)} did not stop within "
                              f"{self.settings.drain_timeout + STOP_SLACK:g}s")
        if not self._failures:
            return
        worker, error = self._failures[0]
        if len(self.workers) == 1:
            raise error
        names = ", ".join(stage.name for stage in worker.stages)
        log.debug("stage %s failed", names, exc_info=error)  # with whatever followed it
        primary = _primary(error)
        if isinstance(primary, StreamtaskError):
            what = str(primary)
        else:  # a bug: the traceback is in the debug log, as the CLI does for its own
            what = f"unexpected {describe(error)} (a bug; --log-level DEBUG shows the traceback)"
        others = len(self._failures) - 1
        more = f" ({others} other stage group(s) failed too)" if others else ""
        raise StageFailed(f"stage {names}: {what.rstrip('.')}; the other stages were "
                          f"stopped{more}") \
            from error


def _primary(error: BaseException) -> BaseException:
    """The first streamtask error of the chain that ended a Worker: a Worker that fails
    cleans up on its way out, and a client that failed (a fenced producer) may fail again
    there, so ``error`` may be raised while handling the one that says what happened."""
    primary, seen = error, error.__context__
    for _ in range(20):  # contexts chain back to the first failure (never a cycle, bounded)
        if seen is None:
            break
        if isinstance(seen, StreamtaskError):
            primary = seen
        seen = seen.__context__
    return primary
