"""The closed catalogue of things a worker reports, and the bus subscribers listen on.

Logs, counters, metrics and the execution trail are all subscribers: the worker loop only
emits. A subscriber runs detached by default, on a thread of its own behind a bounded queue
(:mod:`streamtask.dispatcher`), so one that blocks or raises never holds up the loop; the
worker's own counters and logger, and other subscribers that are cheap and never wait
(``inline=True``), run on the loop's thread. Emitting with no subscriber costs one attribute
lookup and a loop over an empty list, so the per-task events stay cheap on the hot path. An
event only counters (and a logger whose level drops it) would see need not be built at all:
:meth:`EventBus.wants` says so, and :meth:`EventBus.tally` then counts it without its fields.
A task's outcome events (succeeded, failed, timed out, retried, dead-lettered) carry ``at``,
the worker's clock when it settled the outcome (epoch ms): a detached subscriber may take
an event long after, so the clock it reads then is not the event's time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from streamtask.dispatcher import BACKLOG, Dispatcher, subscriber_name
from streamtask.kafka.headers import describe


class Event(StrEnum):
    WORKER_STARTED = "worker.started"
    WORKER_STOPPING = "worker.stopping"
    WORKER_STOPPED = "worker.stopped"
    PARTITIONS_ASSIGNED = "partitions.assigned"
    PARTITIONS_REVOKED = "partitions.revoked"
    PARTITIONS_LOST = "partitions.lost"
    CONSUMER_RECREATED = "consumer.recreated"
    CLIENTS_RECREATED = "clients.recreated"
    OFFSETS_COMMITTED = "offsets.committed"
    OFFSETS_COMMIT_ACKNOWLEDGED = "offsets.commit_acknowledged"
    OFFSETS_COMMIT_FAILED = "offsets.commit_failed"
    DELIVERY_FAILED = "record.delivery_failed"
    TASK_SUCCEEDED = "task.succeeded"
    TASK_FAILED = "task.failed"
    TASK_TIMED_OUT = "task.timed_out"
    TASK_ABANDONED = "task.abandoned"
    TASK_RETRIED = "task.retried"
    TASK_DEAD_LETTERED = "task.dead_lettered"
    TASK_DEFERRED = "task.deferred"
    JOIN_BRANCH_STORED = "join.branch_stored"
    JOIN_COMPLETED = "join.completed"
    JOIN_TIMED_OUT = "join.timed_out"
    JOIN_LATE = "join.late_branch"
    RECORD_UNDECODABLE = "record.undecodable"
    RECORD_OVERSIZE = "record.oversize"
    TASK_TYPE_UNKNOWN = "record.unknown_task_type"
    RECORD_UNPRODUCIBLE = "record.unproducible"


Subscriber = Callable[[Event, dict[str, Any]], None]


log = logging.getLogger("streamtask.events")


class EventBus:
    """Fan each emitted event out to every subscriber, in subscription order.

    A bus may have a ``parent`` (say, one shared by several workers): what is emitted here
    also reaches the parent's subscribers, those subscribed later included. A subscriber that
    raises is reported in the log (``event.subscriber_failed``: its first failure, then every
    1000th) and the others, and the worker, carry on: user code never ends the worker. One
    that blocks holds up only its own thread (see :meth:`subscribe`).
    """

    def __init__(self, parent: EventBus | None = None) -> None:
        self._subscribers: list[Subscriber] = []
        self._counters: list[EventCounter] = []
        self._dispatchers: list[Dispatcher] = []
        self._parent = parent
        self._failures: Counter[int] = Counter()

    def subscribe(self, subscriber: Subscriber, *, inline: bool = False,
                  backlog: int = BACKLOG) -> None:
        """Hand ``subscriber`` every event emitted here (and on this bus's children).

        By default it runs on a thread of its own, up to ``backlog`` events behind the loop;
        past that, events it would miss are dropped and counted (:meth:`dropped`). With
        ``inline=True`` it runs on the emitting loop's thread: only for subscribers that are
        cheap and never wait (counters, the metrics' dict updates), since the loop waits for
        them. An :class:`EventCounter` or :class:`EventLogger` always runs inline.
        """
        if isinstance(subscriber, EventCounter | EventLogger):
            inline = True
        if not inline:
            dispatcher = Dispatcher(subscriber, self._failed, backlog)
            self._dispatchers.append(dispatcher)
            subscriber = dispatcher
        self._subscribers.append(subscriber)
        if isinstance(subscriber, EventCounter):
            self._counters.append(subscriber)

    def dropped(self) -> dict[str, int]:
        """Events dropped so far per detached subscriber of this bus (by its name), because
        it was too far behind."""
        out: Counter[str] = Counter()
        for dispatcher in self._dispatchers:
            out[dispatcher.name] += dispatcher.dropped
        return dict(out)

    def close(self, timeout: float) -> bool:
        """Let the detached subscribers of this bus and its parents take every event emitted
        so far (waiting at most ``timeout`` seconds in all), then stop this bus's dispatcher
        threads (a parent's may still be fed by other workers). False if one did not take its
        events in time. A worker calls this when it stopped."""
        deadline = time.monotonic() + timeout
        own = [(dispatcher, dispatcher.mark()) for dispatcher in self._dispatchers]
        parents: list[EventBus] = []
        bus = self._parent
        while bus is not None:
            parents.append(bus)
            bus = bus._parent
        # Marked all at once, so that a blocked one does not eat the others' time.
        theirs = [dispatcher.mark() for bus in parents for dispatcher in bus._dispatchers]
        delivered = [taken.wait(max(0.0, deadline - time.monotonic())) for taken in theirs]
        delivered += [dispatcher.close(deadline - time.monotonic(), taken)
                      for dispatcher, taken in own]
        return all(delivered)

    def wants(self, event: Event) -> bool:
        """Whether a subscriber here or in a parent needs ``event``'s fields: any but an
        :class:`EventCounter` (which :meth:`tally` serves) or an :class:`EventLogger`
        whose level drops the event. The loop asks once per batch, so a task whose event
        nobody reads costs no fields dict (the logger's level is re-read each batch)."""
        bus: EventBus | None = self
        while bus is not None:
            for subscriber in bus._subscribers:
                if isinstance(subscriber, EventCounter):
                    continue
                if isinstance(subscriber, EventLogger) and not subscriber.logs(event):
                    continue
                return True
            bus = bus._parent
        return False

    def tally(self, event: Event) -> None:
        """Count ``event`` in every counter of this bus and its parents, with no fields:
        for an event :meth:`wants` said no other subscriber needs."""
        bus: EventBus | None = self
        while bus is not None:
            for counter in bus._counters:
                counter.counts[event] += 1
            bus = bus._parent

    def emit(self, event: Event, **fields: Any) -> None:
        bus: EventBus | None = self
        while bus is not None:
            for subscriber in bus._subscribers:
                try:
                    subscriber(event, fields)
                except BaseException as error:  # a user's subscriber must not end the worker
                    bus._failed(subscriber, event, error)
            bus = bus._parent

    def _failed(self, subscriber: Subscriber, event: Event, error: BaseException) -> None:
        count = self._failures[id(subscriber)] = self._failures[id(subscriber)] + 1
        if count == 1 or count % 1000 == 0:
            name = subscriber_name(subscriber)
            log.error("event.subscriber_failed subscriber=%s event=%s failures=%d error=%s",
                      name, event.value, count, describe(error),
                      extra={"event": "event.subscriber_failed",
                             "fields": {"subscriber": name, "event_name": event.value,
                                        "failures": count, "error": describe(error)}})


class EventCounter:
    """Counts events by kind; the worker's run summary and the tests read it."""

    def __init__(self) -> None:
        self.counts: Counter[Event] = Counter()

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        self.counts[event] += 1


_LEVELS = {
    Event.TASK_SUCCEEDED: logging.DEBUG,
    Event.OFFSETS_COMMITTED: logging.DEBUG,
    Event.OFFSETS_COMMIT_ACKNOWLEDGED: logging.DEBUG,
    Event.OFFSETS_COMMIT_FAILED: logging.WARNING,
    Event.CONSUMER_RECREATED: logging.WARNING,
    Event.CLIENTS_RECREATED: logging.WARNING,
    Event.DELIVERY_FAILED: logging.DEBUG,  # the worker raises DeliveryFailed on the first
    Event.TASK_FAILED: logging.WARNING,
    Event.TASK_TIMED_OUT: logging.WARNING,
    Event.TASK_ABANDONED: logging.WARNING,
    Event.TASK_RETRIED: logging.INFO,
    Event.TASK_DEAD_LETTERED: logging.ERROR,
    Event.TASK_DEFERRED: logging.DEBUG,
    Event.JOIN_COMPLETED: logging.DEBUG,
    Event.JOIN_BRANCH_STORED: logging.DEBUG,
    Event.JOIN_TIMED_OUT: logging.WARNING,
    Event.JOIN_LATE: logging.WARNING,
    Event.RECORD_UNDECODABLE: logging.ERROR,
    Event.RECORD_OVERSIZE: logging.ERROR,
    Event.TASK_TYPE_UNKNOWN: logging.ERROR,
    Event.RECORD_UNPRODUCIBLE: logging.ERROR,
}


class EventLogger:
    """Writes events as structured log records (``extra={"event": ..., **fields}``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("streamtask.worker")

    def logs(self, event: Event) -> bool:
        """Whether the logger's level lets ``event`` through (so it needs its fields)."""
        return self.logger.isEnabledFor(_LEVELS.get(event, logging.INFO))

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        level = _LEVELS.get(event, logging.INFO)
        if not self.logger.isEnabledFor(level):
            return
        detail = " ".join(f"{name}={value}" for name, value in fields.items()
                          if name != "traceback")
        self.logger.log(level, "%s %s", event.value, detail,
                        extra={"event": event.value, "fields": fields})
