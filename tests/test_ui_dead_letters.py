"""The console's dead-letter pages against a real broker: they list and filter what the DLQ
holds, show a dead letter decoded with its error history, and a replay asked over HTTP goes
through ``dlq replay``'s machinery: exactly the picked (or filtered) tasks run again, a second
click replays nothing twice, and the loop guard parks instead of replaying."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from streamtask.ui import ConsoleSettings, create_app
from tests.apps.dlq_app import Faulty, build, fill
from tests.inprocess import run_worker

ROW = re.compile(r'<tr class="letter" data-partition="(\d+)" data-offset="(\d+)" '
                 r'data-key="([^"]*)" data-error="([^"]*)">')


@contextmanager
def console(faulty: Faulty, **settings: Any) -> Iterator[TestClient]:
    """A client of the app's console, its dead-letter reader running and caught up."""
    asgi = create_app(faulty.app, ConsoleSettings(**settings))
    with TestClient(asgi) as client:
        deadline = time.monotonic() + 120
        while not asgi.state.console.index.ready:
            assert time.monotonic() < deadline, "the console never read its DLQs to the end"
            time.sleep(0.1)
        yield client


def rows(client: TestClient, query: str = "") -> list[tuple[int, int, str, str]]:
    page = client.get(f"/letters/work{query}")
    assert page.status_code == 200, page.text
    return [(int(p), int(o), key, error) for p, o, key, error in ROW.findall(page.text)]


def replay(client: TestClient, request: dict[str, Any]) -> dict[str, Any]:
    """Start a replay over HTTP and wait for its result."""
    started = client.post("/api/replays", json={"stage": "work", **request})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = client.get(f"/api/replays/{started.json()['id']}").json()
        if job["finished"]:
            assert job["error"] is None, job
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def ids_of(faulty: Faulty, keys: list[str]) -> set[str]:
    return {run.task_id for run in faulty.runs if run.task_id in keys}


@pytest.fixture
def faulty(kafka: Any, unique: str) -> Faulty:
    faulty = build(kafka.bootstrap, unique)
    fill(faulty, "work", [{"n": n, "error": "KeyError" if n % 3 == 0 else "ValueError"}
                          for n in range(6)])
    return faulty


@pytest.mark.timeout(300)
def test_the_pages_list_filter_and_show_dead_letters(faulty: Faulty) -> None:
    with console(faulty) as client:
        listed = rows(client)
        assert len(listed) == 6
        assert {key for _, _, key, _ in listed} == {run.task_id for run in faulty.runs}
        key_errors = rows(client, "?error_type=KeyError")
        assert sorted(error for *_, error in key_errors) == ["KeyError", "KeyError"]
        one = listed[0]
        assert rows(client, f"?key={one[2]}") == [one]
        assert rows(client, "?since=2099-01-01T00:00:00Z") == []
        assert client.get("/letters/work?since=soon").status_code == 400
        detail = client.get(f"/letters/work/{one[0]}/{one[1]}").text
        run = next(r for r in faulty.runs if r.task_id == one[2])
        assert f"&#34;n&#34;: {run.payload['n']}" in detail  # the decoded payload
        assert f"broken while handling n={run.payload['n']}" in detail
        assert re.search(r'<table class="grid" id="history">.*?<td class="num">1</td>', detail,
                         re.S), "the error history lists attempt 1"
        overview = client.get("/letters").text
        assert re.search(r'data-stage="work">.*?<td class="num">6</td>', overview, re.S)


@pytest.mark.timeout(300)
def test_a_picked_replay_runs_exactly_those_tasks_once(faulty: Faulty) -> None:
    with console(faulty) as client:
        picked = rows(client, "?error_type=KeyError")
        faulty.broken = False
        request = {"positions": [[p, o] for p, o, _, _ in picked]}
        job = replay(client, request)
        assert job["counts"]["replayed"] == 2 and job["counts"]["parked"] == 0
        again = replay(client, request)  # a second click on the same selection
        assert again["counts"]["replayed"] == 0
    run_worker(faulty.app, ["work"], max_tasks=2, idle_timeout=5)
    done = [run.task_id for run in faulty.succeeded()]
    assert sorted(done) == sorted(key for *_, key, _ in picked)


@pytest.mark.timeout(300)
def test_a_filter_replay_takes_what_matches_and_the_loop_guard_parks(faulty: Faulty) -> None:
    with console(faulty) as client:
        value_errors = [key for *_, key, error in rows(client) if error == "ValueError"]
        parked = replay(client, {"error_type": "KeyError", "max_replays": 0})
        assert parked["counts"]["parked"] == 2 and parked["counts"]["replayed"] == 0
        assert parked["counts"]["skipped"] == 4
        faulty.broken = False
        job = replay(client, {"error_type": "ValueError", "rate": 50})
        assert job["counts"]["replayed"] == 4
    run_worker(faulty.app, ["work"], max_tasks=4, idle_timeout=5)
    assert sorted(run.task_id for run in faulty.succeeded()) == sorted(value_errors)
