"""An event subscriber that blocks forever or raises on every event never holds up a worker:
tasks keep flowing in every stage (one process running several stage groups, and one Worker
alone), and the events the blocked subscriber misses are dropped, counted, logged and
exported as ``streamtask_events_dropped_total``."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from streamtask import Task, Worker, WorkerSettings
from streamtask.cli.worker import _observed
from streamtask.events import Event
from tests.helpers import Kept, scrape, wait_until
from tests.inprocess import new_app, send_all

TASKS = 150
BACKLOG = 20
"""Far fewer than the events of a run: the blocked subscriber must drop some."""


class Blocked:
    """Blocks on its first event until the test ends (as a trail producing to a topic
    without a leader would, or a user's subscriber waiting on a dead service)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        self.entered.set()
        self.release.wait(300)


class Raising:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: Event, fields: dict[str, Any]) -> None:
        self.calls += 1
        raise RuntimeError("subscriber bug")


@pytest.fixture
def kept() -> Any:
    handler = Kept(logging.WARNING)
    logger = logging.getLogger("streamtask.events")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def quick_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopping worker waits this long (not 10 s) for the blocked subscriber."""
    monkeypatch.setattr("streamtask.worker.worker.SUBSCRIBERS_TIMEOUT", 1.0)


def _ran_in_thread(run: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(run())
        except BaseException as error:  # surfaced in the test's thread
            out.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.timeout(180)
def test_a_blocked_subscriber_holds_up_no_stage_of_a_host(kafka, unique, kept) -> None:
    app = new_app(kafka.bootstrap, unique)
    ran: dict[str, set[int]] = {"left": set(), "right": set()}
    for name in ran:
        app.stage(name, partitions=2)(
            lambda task, name=name: ran[name].add(task.payload["n"]))  # type: ignore[misc]
    for name in ran:
        send_all(app, name, [{"n": n} for n in range(TASKS)])
    # The host as `streamtask worker --metrics-port` builds it: metrics inline, served.
    host, server = _observed(app, None, WorkerSettings(), 0, "127.0.0.1")
    blocked, raising = Blocked(), Raising()
    host.subscribe(blocked, backlog=BACKLOG)
    host.subscribe(raising)
    try:
        thread, out = _ran_in_thread(lambda: host.run(max_tasks=2 * TASKS))
        thread.join(120)
        assert not thread.is_alive(), f"the host stalled: ran {ran}"
        assert not isinstance(out[0], BaseException), out[0]
        assert blocked.entered.is_set()
        assert all(ran[name] == set(range(TASKS)) for name in ran), ran
        assert out[0].counts["task.succeeded"] == 2 * TASKS
        assert raising.calls >= 2 * TASKS  # it heard every task, on its own thread
        dropped = host.events_dropped["Blocked"]
        assert dropped >= 2 * TASKS - BACKLOG  # each task's success at least, but the first
        samples = scrape(server.port)
        assert samples[("streamtask_events_dropped_total",
                        frozenset({("app", app.name), ("subscriber", "Blocked")}))] == dropped
        assert any("event.subscriber_lagging subscriber=Blocked dropped=1 " in line
                   for line in kept.lines), kept.lines
        assert any("event.subscriber_stuck subscriber=Blocked" in line
                   for line in kept.lines), kept.lines
        assert any("event.subscriber_failed subscriber=Raising" in line
                   for line in kept.lines), kept.lines
    finally:
        blocked.release.set()
        server.close()


@pytest.mark.timeout(120)
def test_a_blocked_subscriber_holds_up_no_single_worker(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    ran: set[int] = set()

    @app.stage("work", partitions=2)
    def work(task: Task) -> None:
        ran.add(task.payload["n"])

    send_all(app, "work", [{"n": n} for n in range(TASKS)])
    worker = Worker(app)
    blocked = Blocked()
    worker.events.subscribe(blocked, backlog=BACKLOG)
    worker.events.subscribe(Raising())
    try:
        thread, out = _ran_in_thread(lambda: worker.run(max_tasks=TASKS))
        wait_until(lambda: not thread.is_alive(), 90, "the worker ran every task",
                   lambda: f"ran {len(ran)} of {TASKS}")
        assert not isinstance(out[0], BaseException), out[0]
        assert ran == set(range(TASKS))
        assert worker.events.dropped()["Blocked"] >= TASKS - BACKLOG
    finally:
        blocked.release.set()
