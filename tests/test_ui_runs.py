"""The console's Runs pages read the execution trail from a real broker: runs are listed
and found by stage, outcome and run id, and a run's page shows its tree (a task under the
task that produced it) with every attempt: the failed one before its retry, and a dead
letter in red."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from streamtask import App, Task, Worker, WorkerSettings
from streamtask.ops.trail import TrailWriter
from streamtask.retry import Backoff, RetryPolicy
from streamtask.ui import ConsoleSettings, create_app
from tests.inprocess import new_app, send_all

RUN_ROW = re.compile(r'<tr class="run( dead)?" data-run="([0-9a-f]+)">')
TASK_ROW = re.compile(r'<tr class="task( dead)?" data-stage="(\w+)" data-task="([0-9a-f]+)">'
                      r'\s*<td style="padding-left: ([0-9.]+)em">.*?</td>\s*<td>(.*?)</td>', re.S)


def flaky(bootstrap: str, unique: str) -> App:
    """``work`` fails every task's first attempt (a doomed task every attempt), then hands
    the result to ``store``."""
    app = new_app(bootstrap, unique)

    @app.stage("work", then="store",
               retry=RetryPolicy(max_attempts=2, backoff=Backoff.FIXED, delay=0.5))
    def work(task: Task) -> Any:
        if task.attempt == 1 or task.payload.get("doomed"):
            raise ConnectionError(f"busy on attempt {task.attempt}")
        return task.payload

    @app.stage("store")
    def store(task: Task) -> None:
        return None

    return app


def run_with_trail(app: App) -> None:
    """Send a task that retries once and one that is dead-lettered; run a worker per stage,
    each writing the trail as ``streamtask worker`` does, until they idle."""
    send_all(app, "work", [{"n": 1}, {"n": 2, "doomed": True}])
    workers = [Worker(app, [stage], WorkerSettings()) for stage in ("work", "store")]
    for worker in workers:
        worker.events.subscribe(TrailWriter(app, worker.worker_id))
    threads = [threading.Thread(target=w.run, kwargs={"idle_timeout": 8}) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)


@pytest.fixture
def ran(kafka: Any, unique: str) -> Iterator[tuple[App, TestClient]]:
    app = flaky(kafka.bootstrap, unique)
    run_with_trail(app)
    with TestClient(create_app(app, ConsoleSettings())) as client:
        yield app, client


def listed(client: TestClient, query: str) -> dict[str, bool]:
    """Run id -> dead-lettered, for the runs a search lists (waits for the trail)."""
    deadline = time.monotonic() + 120
    while True:
        page = client.get(f"/runs?{query}")
        assert page.status_code == 200, page.text
        found = {run: bool(dead) for dead, run in RUN_ROW.findall(page.text)}
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.mark.timeout(300)
def test_runs_are_listed_and_found_by_stage_outcome_and_id(
        ran: tuple[App, TestClient]) -> None:
    _, client = ran
    every = listed(client, "since=10m")
    assert len(every) == 2 and sorted(every.values()) == [False, True]
    dead = next(run for run, is_dead in every.items() if is_dead)
    assert listed(client, "since=10m&outcome=dead_lettered") == {dead: True}
    done = next(run for run in every if run != dead)
    assert listed(client, "since=10m&stage=store") == {done: False}
    jump = client.get(f"/runs?run={done}", follow_redirects=False)
    assert jump.status_code == 303 and jump.headers["location"] == f"/runs/{done}"
    assert client.get("/runs?since=soon").status_code == 400


@pytest.mark.timeout(300)
def test_a_runs_page_shows_its_retry_its_tree_and_its_dead_letter(
        ran: tuple[App, TestClient]) -> None:
    _, client = ran
    every = listed(client, "since=10m")
    done = next(run for run, is_dead in every.items() if not is_dead)
    rows = TASK_ROW.findall(client.get(f"/runs/{done}").text)
    assert [(stage, float(indent) > 0.6) for _, stage, _, indent, _ in rows] == [
        ("work", False), ("store", True)]  # store's task sits under the work task
    attempts = re.findall(r"#(\d) (\w+)", rows[0][4])
    assert attempts == [("1", "failed"), ("2", "succeeded")]
    assert "busy on attempt 1" in rows[0][4]
    dead = next(run for run, is_dead in every.items() if is_dead)
    page = client.get(f"/runs/{dead}").text
    (_, stage, _, _, cell), = TASK_ROW.findall(page)
    assert stage == "work" and re.findall(r"#(\d) (\w+)", cell) == [("1", "failed"),
                                                                      ("2", "failed")]
    assert '<tr class="task dead"' in page and "dead-lettered:" in cell
    assert "no events of this run" in client.get("/runs/" + "0" * 32).text
