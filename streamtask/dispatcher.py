"""A subscriber detached from the worker loop: it runs on a thread of its own, fed through a
bounded queue, so whatever it does (block on a slow broker, sleep, raise on every event) never
holds up a worker loop.

The loop's side costs an append and a length check: a subscriber is handed each event
(``__call__``) and returns at once. When the subscriber falls ``backlog`` events behind, new
events are *dropped and counted* (not coalesced: a subscriber's events are arbitrary, and only
it could say how to merge two), and the count is logged (``event.subscriber_lagging``, the
first drop and then every 1000th) and exported (``streamtask_events_dropped_total``). Keeping
the loop going beats keeping an observer complete: the worker's own counters, the logs and
the tasks themselves never depend on a detached subscriber.

Each subscriber gets its own thread, so one that blocks starves no other, and a subscriber
written for one thread (the trail's buffer) is still called from one thread only, even when
several Workers feed it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("streamtask.events")

BACKLOG = 10_000
"""Events a detached subscriber may fall behind before new ones are dropped."""
BATCH_WAIT = 0.005
"""Seconds between two looks at the queue while events flow (the most an event waits)."""
BUSY_FOR = 1.0
"""Events flow while the last one came less than this many seconds ago; after that the
thread sleeps until an emitter wakes it."""
IDLE_WAIT = 1.0
"""Seconds an idle dispatcher thread sleeps between looks at its queue (a safety net: an
emitter wakes it as soon as it adds an event)."""

Call = Callable[[Any, dict[str, Any]], None]
OnError = Callable[[Call, Any, BaseException], None]


def subscriber_name(subscriber: object) -> str:
    """The name logs and metrics give a subscriber: its function's or its class's."""
    return str(getattr(subscriber, "__qualname__", type(subscriber).__qualname__))


class Dispatcher:
    """Calls ``subscriber`` on its own daemon thread with the events handed to it.

    ``on_error`` is called (on the dispatcher's thread) with the subscriber, the event and
    the exception when the subscriber raises; the dispatcher goes on with the next event.
    The thread starts with the first event and stops at :meth:`close` (a later event starts
    it again).
    """

    def __init__(self, subscriber: Call, on_error: OnError, backlog: int = BACKLOG) -> None:
        if backlog < 1:
            raise ValueError(f"backlog must be at least 1, not {backlog}")
        self.subscriber = subscriber
        self.name = subscriber_name(subscriber)
        self.backlog = backlog
        self.dropped = 0
        """Events dropped because the subscriber was ``backlog`` events behind."""
        self._on_error = on_error
        self._queue: deque[tuple[Any, Any]] = deque()
        self._ready = threading.Event()
        self._idle = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- the emitting (loop) threads' side ---------------------------------------------------

    def __call__(self, event: Any, fields: dict[str, Any]) -> None:
        """Queue ``event`` for the subscriber, or drop it if the subscriber is too far behind;
        never waits for the subscriber."""
        queue = self._queue
        if len(queue) >= self.backlog:
            self._drop(event)
            return
        queue.append((event, fields))
        if self._thread is None:
            self._start()
        # The thread marks itself idle before its last look at the queue, and this side
        # appended before reading the mark: one of the two sees the other, so no event waits
        # for the safety-net timeout. Setting the Event only then keeps its lock off the
        # loop's path while the subscriber keeps up.
        if self._idle:
            self._ready.set()

    def _drop(self, event: Any) -> None:
        with self._lock:  # several loops may feed one subscriber: count each drop once
            self.dropped += 1
            dropped = self.dropped
        if dropped == 1 or dropped % 1000 == 0:
            name = getattr(event, "value", str(event))
            log.warning("event.subscriber_lagging subscriber=%s dropped=%d backlog=%d "
                        "event=%s: the subscriber is too slow (or blocked); events it misses "
                        "are dropped so that the worker goes on",
                        self.name, dropped, self.backlog, name,
                        extra={"event": "event.subscriber_lagging",
                               "fields": {"subscriber": self.name, "dropped": dropped,
                                          "backlog": self.backlog, "event_name": name}})

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"streamtask-subscriber:{self.name}")
                self._thread.start()

    # -- the dispatcher's thread -------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        last_event = time.monotonic()
        while True:
            if queue:
                if not self._deliver_queued() and self._stopped():
                    return
                last_event = time.monotonic()
            if time.monotonic() - last_event < BUSY_FOR:
                # Events flow: take them in batches every BATCH_WAIT rather than wake for
                # each one (a wake per event cost more CPU than the emit, measured).
                time.sleep(BATCH_WAIT)
                continue
            self._idle = True
            self._ready.clear()
            if not queue:
                self._ready.wait(IDLE_WAIT)
            self._idle = False

    def _stopped(self) -> bool:
        """At close's stop marker: end this thread, unless events came after the marker.

        ``_thread`` is cleared before the queue is looked at, and an emitter reads it after
        appending: either this thread sees the new event and goes on, or the emitter sees no
        thread and starts one (which waits for this lock, and then finds this one going on
        or gone)."""
        with self._lock:
            self._thread = None
            if not self._queue:
                return True
            self._thread = threading.current_thread()
            return False

    def _deliver_queued(self) -> bool:
        """Hand the subscriber every queued event; False at the stop marker."""
        queue = self._queue
        while queue:
            event, fields = queue.popleft()
            if event is None:  # a marker from flush (an Event to set) or close (None)
                if fields is None:
                    return False
                fields.set()
                continue
            try:
                self.subscriber(event, fields)
            except BaseException as error:  # a subscriber must not end its dispatcher
                self._on_error(self.subscriber, event, error)
        return True

    # -- shutting down ------------------------------------------------------------------------

    def mark(self) -> threading.Event:
        """An Event set once the subscriber took every event handed to it before this call
        (several dispatchers can then be waited for at once)."""
        taken = threading.Event()
        if self._thread is None and not self._queue:
            taken.set()  # never started, or closed after taking everything
            return taken
        self._queue.append((None, taken))  # beyond the backlog: it carries no event
        if self._thread is None:
            self._start()  # events that came as it stopped
        self._ready.set()
        return taken

    def flush(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until the subscriber took every event handed
        to it before this call; False if it did not in time (it is blocked or slow)."""
        return self.mark().wait(max(0.0, timeout))

    def close(self, timeout: float, taken: threading.Event | None = None) -> bool:
        """Wait for ``taken`` (a :meth:`mark`; by default one made now), then stop the
        thread; False (and a log line saying how many events were not delivered) if the
        subscriber did not take them within ``timeout`` seconds. Call it once no more events
        come: a later event starts the thread again."""
        taken = taken or self.mark()
        thread = self._thread
        if not taken.wait(max(0.0, timeout)):
            undelivered = sum(1 for event, _ in list(self._queue) if event is not None)
            log.error("event.subscriber_stuck subscriber=%s undelivered=%d: it did not take "
                      "its events in time; the worker stops without them",
                      self.name, undelivered,
                      extra={"event": "event.subscriber_stuck",
                             "fields": {"subscriber": self.name, "undelivered": undelivered}})
            return False
        if thread is None:
            return True
        self._queue.append((None, None))
        self._ready.set()
        thread.join(max(0.0, timeout))
        return True
