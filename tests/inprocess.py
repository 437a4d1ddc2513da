"""Helpers for tests that run a worker inside the test process."""

from __future__ import annotations

from typing import Any

from streamtask import App, KafkaSettings, Worker, WorkerSettings
from streamtask.kafka.topics import ensure
from streamtask.worker import WorkerStats


def new_app(bootstrap: str, unique: str) -> App:
    return App(f"t{unique}", kafka=KafkaSettings(bootstrap=bootstrap))


def send_all(app: App, stage: str, payloads: list[Any], key: Any = None) -> None:
    ensure(app)
    with app.producer() as producer:
        producer.send_many(stage, payloads, key=key)


def run_worker(app: App, stages: list[str] | None = None, *, max_tasks: int | None = None,
               idle_timeout: float | None = 3.0, **settings: Any) -> WorkerStats:
    """Run until ``max_tasks`` ended or the worker idled for ``idle_timeout`` seconds."""
    worker = Worker(app, stages, WorkerSettings(**settings))
    return worker.run(max_tasks=max_tasks, idle_timeout=idle_timeout)


def run_stages(app: App, expected: dict[str, int], idle_timeout: float = 5.0,
               **settings: Any) -> dict[str, WorkerStats]:
    """Run one worker per stage concurrently until each ended ``expected[stage]`` tasks."""
    import threading

    results: dict[str, WorkerStats] = {}
    errors: list[BaseException] = []

    def run(stage: str, count: int) -> None:
        try:
            results[stage] = run_worker(app, [stage], max_tasks=count,
                                        idle_timeout=idle_timeout, **settings)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=item) for item in expected.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
