"""A task sent with a delay waits on a retry level of its stage until due: it never runs
early, runs close to its due time, and a delay longer than the stage's longest level is
refused with one line that says what to do."""

from __future__ import annotations

import threading
import time

import pytest

from streamtask import Task
from streamtask.errors import ConfigurationError
from streamtask.kafka.topics import ensure
from streamtask.retry import RetryPolicy
from tests.helpers import wait_until
from tests.inprocess import new_app, run_worker

DELAYS = (1.0, 2.0, 0.5)


@pytest.mark.timeout(120)
def test_delayed_tasks_run_once_due_never_early(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    ran: dict[int, int] = {}
    lock = threading.Lock()

    @app.stage("later", partitions=2, retry=RetryPolicy(max_attempts=3, levels=(2.0, 5.0)))
    def later(task: Task) -> None:
        with lock:
            ran[task.payload["n"]] = time.time_ns() // 1_000_000

    ensure(app)
    thread = threading.Thread(target=lambda: run_worker(app, max_tasks=31, idle_timeout=60))
    thread.start()
    app.send("later", {"n": -1})  # the worker is up once this one ran
    app.flush(30)
    wait_until(lambda: -1 in ran, 60, "the worker runs")
    ran.pop(-1)
    due: dict[int, int] = {}
    with app.producer() as producer:
        for n in range(30):
            delay = DELAYS[n % len(DELAYS)]
            due[n] = time.time_ns() // 1_000_000 + round(delay * 1000)
            producer.send("later", {"n": n}, key=f"k{n % 4}", not_before=due[n])
    wait_until(lambda: len(ran) == 30, 90, "every delayed task ran", lambda: str(ran))
    thread.join(60)
    early = {n: due[n] - ran[n] for n in ran if ran[n] < due[n]}
    assert early == {}
    lateness = max(ran[n] - due[n] for n in ran)
    by_delay = {d: max(ran[n] - due[n] for n in ran if DELAYS[n % len(DELAYS)] == d)
                for d in DELAYS}
    print(f"worst lateness of 30 delayed tasks on a 2 s level: {lateness} ms; "
          f"by delay: {by_delay}")
    assert lateness < 10_000  # generous on a loaded machine; the figure is in the README


def test_a_delay_past_the_longest_level_is_refused(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    app.stage("later", retry=RetryPolicy(max_attempts=2, levels=(2.0,)))(lambda task: None)
    app.stage("plain", retry=RetryPolicy(max_attempts=1))(lambda task: None)
    with app.producer() as producer:
        with pytest.raises(ConfigurationError, match=r"cannot delay a task 30s, its longest "
                           r"retry level is 2s"):
            producer.send("later", {}, delay=30)
        with pytest.raises(ConfigurationError, match="it has no retry levels"):
            producer.send("plain", {}, delay=1)
