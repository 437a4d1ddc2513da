"""Only counters listening: a success is counted without its fields being built; any other
subscriber (a parent bus's too), or a logger whose level lets the event through, gets them."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from streamtask.events import Event, EventBus, EventCounter, EventLogger


def worker_bus(parent: EventBus | None = None,
               logger: logging.Logger | None = None) -> tuple[EventBus, EventCounter]:
    """A bus as the worker builds it: its counter and its logger."""
    bus = EventBus(parent=parent)
    counter = EventCounter()
    bus.subscribe(counter)
    bus.subscribe(EventLogger(logger or logging.getLogger("test.event_bus.quiet")))
    return bus, counter


def test_a_counter_and_a_logger_that_drops_the_event_need_no_fields() -> None:
    quiet = logging.getLogger("test.event_bus.quiet")
    quiet.setLevel(logging.INFO)
    bus, counter = worker_bus(logger=quiet)
    assert not bus.wants(Event.TASK_SUCCEEDED)
    bus.tally(Event.TASK_SUCCEEDED)
    bus.tally(Event.TASK_SUCCEEDED)
    assert counter.counts[Event.TASK_SUCCEEDED] == 2


def test_a_logger_at_debug_wants_successes() -> None:
    verbose = logging.getLogger("test.event_bus.verbose")
    verbose.setLevel(logging.DEBUG)
    bus, _ = worker_bus(logger=verbose)
    assert bus.wants(Event.TASK_SUCCEEDED)
    verbose.setLevel(logging.INFO)  # the level is read at each ask, not once
    assert not bus.wants(Event.TASK_SUCCEEDED)


def test_any_other_subscriber_wants_the_fields() -> None:
    seen: list[tuple[Event, dict[str, Any]]] = []
    bus, _ = worker_bus()
    bus.subscribe(lambda event, fields: seen.append((event, fields)))
    assert bus.wants(Event.TASK_SUCCEEDED)


def test_a_parents_subscriber_wants_them_and_a_parents_counter_is_tallied() -> None:
    parent = EventBus()
    parent_counter = EventCounter()
    parent.subscribe(parent_counter)
    bus, counter = worker_bus(parent=parent)
    assert not bus.wants(Event.TASK_SUCCEEDED)
    bus.tally(Event.TASK_SUCCEEDED)
    assert counter.counts[Event.TASK_SUCCEEDED] == parent_counter.counts[
        Event.TASK_SUCCEEDED] == 1
    parent.subscribe(lambda event, fields: None)  # subscribed later: still asked
    assert bus.wants(Event.TASK_SUCCEEDED)


def test_a_detached_subscriber_gets_every_event_in_order_on_its_own_thread() -> None:
    bus = EventBus()
    seen: list[tuple[int, str]] = []

    def note(event: Event, fields: dict[str, Any]) -> None:
        seen.append((fields["n"], threading.current_thread().name))

    bus.subscribe(note)
    for n in range(500):
        bus.emit(Event.TASK_SUCCEEDED, n=n)
    assert bus.close(10)
    assert [n for n, _ in seen] == list(range(500))
    assert {name for _, name in seen} == {f"streamtask-subscriber:{note.__qualname__}"}
    assert bus.dropped() == {note.__qualname__: 0}


def test_a_blocked_subscriber_drops_past_its_backlog_and_never_blocks_emit() -> None:
    release = threading.Event()

    class Stuck:
        def __call__(self, event: Event, fields: dict[str, Any]) -> None:
            release.wait(30)

    bus = EventBus()
    bus.subscribe(Stuck(), backlog=10)
    healthy: list[int] = []
    bus.subscribe(lambda event, fields: healthy.append(fields["n"]))
    began = time.monotonic()
    for n in range(1000):
        bus.emit(Event.TASK_SUCCEEDED, n=n)
    assert time.monotonic() - began < 5  # the emitter never waited for the subscriber
    assert 1000 - 11 <= bus.dropped()[Stuck.__qualname__] <= 1000 - 10  # one taken, ten queued
    closing = time.monotonic()
    assert not bus.close(0.5)  # it did not take its events: the stop is bounded anyway
    assert time.monotonic() - closing < 5
    assert healthy == list(range(1000))  # the stuck one did not eat the others' time
    release.set()
    assert bus.close(10)
