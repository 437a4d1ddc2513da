"""Helpers for tests that run Conductor workflow apps against the broker."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from streamtask import Task, Worker, WorkerSettings
from streamtask.conductor.context import RunResult, run_result
from streamtask.model.workflow import WorkflowApp


class Finished:
    """Collects finished runs (give :meth:`on_end` to ``load_workflow``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, RunResult] = {}

    def on_end(self, task: Task) -> None:
        result = run_result(task)
        with self.lock:
            self.runs[result.workflow_id] = result


@contextlib.contextmanager
def running(app: WorkflowApp) -> Iterator[None]:
    """A worker per stage of ``app``, each in a thread, stopped on exit."""
    workers = [Worker(app, [name], WorkerSettings()) for name in app.stages]
    threads = [threading.Thread(target=worker.run) for worker in workers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(60)
