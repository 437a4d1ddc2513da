"""Workers write each run's execution trail to ``<app>.events``; ``streamtask runs show``
rebuilds a run (a retry, a fork, a dead letter) as a tree by parent from that one partition,
and ``runs ls`` filters runs by stage and outcome."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from streamtask import Task, Worker, WorkerSettings
from streamtask.kafka.topics import ensure
from streamtask.model.envelope import new_task_id
from streamtask.ops.trail import TrailWriter, started_ms
from streamtask.retry import RetryPolicy
from tests.inprocess import new_app
from tests.test_cli_errors import assert_one_line_error, streamtask


def runs(*args: str) -> Result:
    from streamtask.cli import app as cli

    return CliRunner().invoke(cli, ["runs", *args], env={"COLUMNS": "200"},
                              catch_exceptions=False)


def shop(bootstrap: str, unique: str) -> Any:
    """charge -> (ship, email); order 3: charge fails once, ship dead-letters it."""
    app = new_app(bootstrap, unique)

    @app.stage("charge", partitions=2, then=("ship", "email"),
               retry=RetryPolicy(max_attempts=3, levels=(0.2,)))
    def charge(task: Task) -> Any:
        if task.payload["order"] == 3 and task.attempt == 1:
            raise ConnectionError("payment gateway timed out")
        return task.payload

    @app.stage("ship", partitions=2, retry=RetryPolicy(max_attempts=1))
    def ship(task: Task) -> None:
        if task.payload["order"] == 3:
            raise ValueError("no courier serves this address")

    @app.stage("email", partitions=2)
    def email(task: Task) -> None:
        return None

    return app


def run_with_trail(app: Any, ended: dict[str, int]) -> None:
    errors: list[BaseException] = []

    def run(stage: str, count: int) -> None:
        try:
            worker = Worker(app, [stage], WorkerSettings(commit_interval=0.2))
            worker.events.subscribe(TrailWriter(app, f"{worker.worker_id}-{stage}"))
            worker.run(max_tasks=count, idle_timeout=30)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=item) for item in ended.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors, errors


@pytest.mark.timeout(150)
def test_a_runs_trail_shows_its_retry_fork_and_dead_letter(kafka, unique) -> None:
    app = shop(kafka.bootstrap, unique)
    ensure(app)
    ids = {n: new_task_id() for n in range(4)}
    with app.producer() as producer:
        for n, task_id in ids.items():
            producer.send("charge", {"order": n}, task_id=task_id)
    # charge: 4 succeeded + 1 retried; ship: 3 succeeded + 1 dead-lettered; email: 4.
    run_with_trail(app, {"charge": 5, "ship": 4, "email": 4})

    shown = runs("show", app.name, ids[3], "--json", "--bootstrap", kafka.bootstrap)
    assert shown.exit_code == 0, shown.output
    (charge,) = orjson.loads(shown.stdout)["tasks"]
    assert charge["task_id"] == ids[3] and charge["stage"] == "charge"
    assert [(a["attempt"], a["outcome"]) for a in charge["attempts"]] == \
        [(1, "failed"), (2, "succeeded")]
    assert "payment gateway" in charge["attempts"][0]["error"]
    children = {child["stage"]: child for child in charge["children"]}
    assert set(children) == {"ship", "email"}
    assert children["ship"]["parent_id"] == ids[3]
    assert "no courier" in children["ship"]["dead_letter"]
    assert [a["outcome"] for a in children["email"]["attempts"]] == ["succeeded"]
    assert children["email"]["dead_letter"] is None

    tree = runs("show", app.name, ids[3], "--bootstrap", kafka.bootstrap)
    assert "dead-lettered: ValueError: no courier" in tree.stdout
    assert "#1 failed" in tree.stdout and "#2 succeeded" in tree.stdout

    listed = runs("ls", app.name, "--outcome", "dead-lettered", "--json",
                  "--bootstrap", kafka.bootstrap)
    assert [orjson.loads(line)["run_id"] for line in listed.stdout.splitlines()] == [ids[3]]
    every = runs("ls", app.name, "--stage", "ship", "--json", "--bootstrap", kafka.bootstrap)
    assert {orjson.loads(line)["run_id"] for line in every.stdout.splitlines()} == \
        set(ids.values())


def test_run_ids_embed_their_start_time() -> None:
    now = time.time() * 1000
    began = started_ms(new_task_id())
    assert began is not None and abs(began - now) < 1000
    assert started_ms("not-a-time-ordered-id") is None


@pytest.mark.timeout(60)
def test_unknown_runs_and_bad_filters_fail_in_one_line(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    app.stage("work")(lambda task: None)
    assert_one_line_error(streamtask("runs", "show", app.name, "0" * 32, "--bootstrap",
                                     kafka.bootstrap), "does not exist")
    ensure(app)  # creates the (empty) trail topic with the others
    TrailWriter(app, "w").flush(final=True)
    assert_one_line_error(streamtask("runs", "show", app.name, "0" * 32, "--bootstrap",
                                     kafka.bootstrap), "no events of run")
    assert_one_line_error(streamtask("runs", "ls", app.name, "--outcome", "lost",
                                     "--bootstrap", kafka.bootstrap), "--outcome 'lost'")
