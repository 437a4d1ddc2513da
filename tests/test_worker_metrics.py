"""A worker's /metrics, scraped over HTTP after a known run, counts exactly what happened:
successes, failures, retries by level, dead letters by reason, handler durations, commits,
rebalances, consumer lag (0 once drained) and the worker's info. Under ``--processes 2``
each child serves its own port."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from streamtask import WorkerSettings
from streamtask.dev.broker import free_port
from streamtask.kafka.topics import ensure
from streamtask.ops.metrics import observed_worker
from streamtask.retry import RetryPolicy
from tests.apps.observed_app import build, build_stuck
from tests.helpers import RecorderRun, Samples, scrape, value, wait_until
from tests.test_cli_errors import assert_one_line_error, streamtask


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.timeout(120)
def test_metrics_after_a_known_run(kafka, unique) -> None:
    observed = build(kafka.bootstrap, unique, partitions=2,
                     retry=RetryPolicy(max_attempts=2, levels=(0.5,)))
    app = observed.app
    ensure(app)
    with app.producer() as producer:
        producer.send_many("work", [{"n": n} for n in range(5)])
        producer.send_many("work", [{"n": n, "fail": True} for n in range(5, 7)])
    worker, server = observed_worker(app, None, WorkerSettings(commit_interval=0.2), port=0,
                                     addr="127.0.0.1", version="9.9", interval_ms=200)
    # 5 successes, 2 x (fail, retry) then 2 x (fail, dead-letter): 9 ended tasks.
    thread = threading.Thread(target=worker.run, kwargs={"max_tasks": 9}, daemon=True)
    try:
        thread.start()
        thread.join(90)
        assert not thread.is_alive(), "the worker did not end its 9 tasks"
        samples = scrape(server.port)
        check_counts(samples, app.name)
        check_lag_and_commits(samples, app.name)
    finally:
        worker.stop()
        server.close()


def check_counts(samples: Samples, app: str) -> None:
    tasks = {outcome: value(samples, "streamtask_tasks_total", app=app, stage="work",
                            outcome=outcome)
             for outcome in ("succeeded", "failed", "retried", "dead_lettered", "timed_out")}
    assert tasks == {"succeeded": 5, "failed": 4, "retried": 2, "dead_lettered": 2,
                     "timed_out": 0}
    assert value(samples, "streamtask_task_retries_total", stage="work", level="500ms") == 2
    assert value(samples, "streamtask_dead_letters_total", stage="work", reason="exhausted") == 2
    assert value(samples, "streamtask_task_duration_seconds_count", stage="work") == 9
    assert value(samples, "streamtask_task_duration_seconds_bucket", stage="work",
                 le="+Inf") == 9
    assert 0 < value(samples, "streamtask_task_duration_seconds_sum", stage="work") < 9
    assert value(samples, "streamtask_worker_info", app=app, version="9.9",
                 stages="work") == 1
    assert value(samples, "streamtask_rebalances_total", app=app, kind="assigned") >= 1
    assert value(samples, "streamtask_tasks_in_flight", app=app) == 0
    assert value(samples, "streamtask_delivery_failures_total", app=app) == 0


def check_lag_and_commits(samples: Samples, app: str) -> None:
    assert value(samples, "streamtask_commits_total", app=app) >= 1
    assert value(samples, "streamtask_commit_duration_seconds_count", app=app) >= 1
    assert value(samples, "streamtask_commit_failures_total", app=app) == 0
    lag = {dict(labels)["topic"]: v for (name, labels), v in samples.items()
           if name == "streamtask_consumer_lag"}
    assert f"{app}.work" in lag, f"no lag reported: {lag}"


@pytest.mark.timeout(120)
def test_lag_of_a_stuck_worker_is_reported(kafka, unique) -> None:
    """librdkafka reports no lag before a partition's first commit; we count from the start."""
    observed = build_stuck(kafka.bootstrap, unique, behind=3)
    app = observed.app
    worker, server = observed_worker(app, None, WorkerSettings(concurrency=1), port=0,
                                     addr="127.0.0.1", interval_ms=200)
    thread = threading.Thread(target=worker.run, daemon=True)
    try:
        thread.start()
        assert observed.hanging.wait(60)
        wait_until(lambda: value(scrape(server.port), "streamtask_consumer_lag",
                                 topic=f"{app.name}.work") == 4, 30, "lag 4 is reported",
                   interval=0.3)
        samples = scrape(server.port)
        assert value(samples, "streamtask_tasks_in_flight", app=app.name) == 1
        assert value(samples, "streamtask_tasks_held", app=app.name) == 4
    finally:
        observed.gate.set()
        worker.stop()
        thread.join(30)
        server.close()


@pytest.mark.timeout(180)
def test_each_child_process_serves_its_own_port(kafka, unique, tmp_path) -> None:
    port = next(p for p in iter(free_port, None) if bindable(p + 1))
    with RecorderRun(kafka.bootstrap, f"t{unique}", tmp_path, partitions=2) as run:
        run.ensure_topics()
        run.send(20)
        worker = run.start_worker("--processes", "2", "--metrics-port", str(port),
                                  "--metrics-addr", "127.0.0.1")
        seen: dict[int, Any] = {}

        def both_serve() -> bool:
            for p in (port, port + 1):
                try:
                    seen[p] = scrape(p)
                except OSError:
                    return False
            return True

        wait_until(both_serve, 90, "both children serve /metrics", run.describe_workers,
                   interval=0.5)
        workers = {dict(labels)["worker"] for p in seen for (name, labels), _ in seen[p].items()
                   if name == "streamtask_worker_info"}
        assert len(workers) == 2, workers
        wait_until(lambda: sum(value(scrape(p), "streamtask_tasks_total", outcome="succeeded")
                               for p in (port, port + 1)) == 20, 90, "20 tasks counted",
                   run.describe_workers, interval=0.5)
        worker.signal(15)
        assert worker.wait(60) == 0, run.describe_workers()


def test_a_taken_port_is_a_one_line_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        done = streamtask("worker", "tests.apps.recorder:app", "--metrics-port", str(taken),
                          "--metrics-addr", "127.0.0.1", "--bootstrap", "127.0.0.1:1")
    assert_one_line_error(done, f"cannot serve metrics on 127.0.0.1:{taken}")


class Blocked:
    """A detached subscriber stuck on its first event until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, event: Any, fields: dict[str, Any]) -> None:
        self.release.wait(60)


@pytest.mark.timeout(120)
def test_events_a_blocked_subscriber_missed_are_exported(kafka, unique, monkeypatch) -> None:
    """A worker built by ``observed_worker`` (as ``bench --observed`` builds it, the trail on
    the worker's own bus) exports the events its detached subscribers dropped."""
    monkeypatch.setattr("streamtask.worker.worker.SUBSCRIBERS_TIMEOUT", 1.0)
    observed = build(kafka.bootstrap, unique)
    ensure(observed.app)
    with observed.app.producer() as producer:
        producer.send_many("work", [{"n": n} for n in range(10)])
    blocked = Blocked()
    worker, server = observed_worker(observed.app, None, WorkerSettings(), port=0,
                                     addr="127.0.0.1")
    worker.events.subscribe(blocked, backlog=2)
    try:
        worker.run(max_tasks=10, idle_timeout=60)
        dropped = worker.events.dropped()["Blocked"]
        assert dropped >= 10 - 2  # each task's success at least, but those queued
        assert value(scrape(server.port), "streamtask_events_dropped_total",
                     subscriber="Blocked") == dropped
    finally:
        blocked.release.set()
        server.close()
