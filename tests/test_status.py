"""``streamtask status`` reads each stage's state from the broker: a stage whose worker hangs
is stuck (exit 3), a stage without workers says so, retry records are split into due now and
waiting by their due headers, the DLQ is counted, a join's pending forks are counted from its
changelog, and a drained stage is healthy (exit 0)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import confluent_kafka
import orjson
import pytest
from typer.testing import CliRunner, Result

from streamtask import Task, Worker, WorkerSettings
from streamtask.cli import app as cli
from streamtask.kafka import headers as dl
from streamtask.kafka.topics import ensure
from streamtask.model.pipeline import merged
from streamtask.ops.status import Member, RetryLevel, Sample, Verdict, judge
from streamtask.retry import RetryPolicy
from streamtask.worker.joins import FORK, FROM_STAGE
from tests.apps import observed_app
from tests.apps.observed_app import build, build_stuck
from tests.helpers import wait_for_leaders, wait_until
from tests.inprocess import new_app, run_worker
from tests.test_cli_errors import assert_one_line_error, streamtask


def status(*args: str) -> Result:
    return CliRunner().invoke(cli, ["status", *args], env={"COLUMNS": "250"},
                              catch_exceptions=False)


def stage_json(result: Result) -> dict[str, Any]:
    stages: list[dict[str, Any]] = orjson.loads(result.stdout)["stages"]
    assert len(stages) == 1, result.stdout
    return stages[0]


def sample(at: float, committed: dict[str, int], lag: int, members: int = 1,
           due: int = 0) -> Sample:
    member = Member("g", "m", "c", "/127.0.0.1", ["t[0]"])
    return Sample(at, committed, {0: lag}, [RetryLevel("t.retry.5s", 5, due, 7)], 0, 0,
                  [member] * members)


@pytest.mark.parametrize(("before", "after", "verdict"), [
    (sample(0, {"t[0]": 5}, 3), sample(5, {"t[0]": 8}, 2), Verdict.HEALTHY),
    (sample(0, {"t[0]": 5}, 0), sample(5, {"t[0]": 5}, 0), Verdict.HEALTHY),
    (sample(0, {"t[0]": 5}, 3), sample(5, {"t[0]": 5}, 3), Verdict.STUCK),
    (sample(0, {}, 3), sample(5, {}, 3), Verdict.STUCK),
    (sample(0, {"t[0]": 5}, 0, due=2), sample(5, {"t[0]": 5}, 0, due=2), Verdict.STUCK),
    (sample(0, {"t[0]": 5}, 3), sample(5, {"t[0]": 9}, 9), Verdict.BACKLOG_GROWING),
    (sample(0, {}, 3, members=0), sample(5, {}, 3, members=0), Verdict.NO_WORKERS),
    (sample(0, {}, 0, members=0), sample(5, {}, 0, members=0), Verdict.NO_WORKERS),
])
def test_verdict_from_two_samples(before: Sample, after: Sample, verdict: Verdict) -> None:
    # Records waiting for their due time (7 per level here) are never backlog.
    assert judge(before, after)[0] is verdict


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, list[Any]]]) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
    for value, headers in records:
        producer.produce(topic, value, b"k", headers=headers)
    assert producer.flush(20) == 0


@pytest.mark.timeout(120)
def test_no_workers_retry_levels_and_dlq(kafka, unique) -> None:
    observed = build(kafka.bootstrap, unique, partitions=2,
                     retry=RetryPolicy(max_attempts=3, levels=(5.0, 3600.0)))
    app = observed.app
    ensure(app)
    with app.producer() as producer:
        producer.send_many("work", [{"n": n} for n in range(3)])
    now = int(time.time() * 1000)
    # Retry records in due-time order, as a worker writes them: 2 due, 3 not yet.
    dues = [now - 60_000, now - 1000, now + 600_000, now + 700_000, now + 800_000]
    level = app.get_stage("work").retry_topic(3600.0)
    produce(kafka.bootstrap, level, [(b"x", [(dl.RETRY_DUE, dl.int64(d))]) for d in dues])
    produce(kafka.bootstrap, app.get_stage("work").dlq_topic, [(b"dead", [])] * 2)

    result = status(observed.ref, "--json", "--window", "0.5")
    assert result.exit_code == 3, result.output
    work = stage_json(result)
    assert work["verdict"] == "no workers"
    assert work["lag"] == 3 and work["members"] == []
    levels = {level["delay"]: (level["due_now"], level["waiting"]) for level in work["retry"]}
    assert levels == {5.0: (0, 0), 3600.0: (2, 3)}
    assert (work["dlq_size"], work["dlq_last_hour"]) == (2, 2)

    table = status(observed.ref, "--window", "0.5")
    assert table.exit_code == 3
    assert "no workers" in table.stdout and "1h: 2 due, 3 waiting" in table.stdout


@pytest.mark.timeout(180)
def test_a_hanging_worker_is_stuck_then_healthy_once_it_drains(kafka, unique) -> None:
    observed = build_stuck(kafka.bootstrap, unique, behind=4)
    app = observed.app
    worker = Worker(app, settings=WorkerSettings(concurrency=1, commit_interval=0.2))
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run(worker, errors), daemon=True)
    thread.start()
    try:
        assert observed.hanging.wait(60), "the hanging task never started"
        result = status(observed.ref, "--json", "--window", "3")
        assert result.exit_code == 3, result.output
        work = stage_json(result)
        assert work["verdict"] == "stuck", work
        assert work["lag"] == 5 and work["worst_partition"] == 0
        assert {m["group"] for m in work["members"]} == {app.get_stage("work").group}
        assert work["members"][0]["partitions"] == [f"{app.get_stage('work').topic}[0]"]
        assert work["members"][0]["host"]

        observed.gate.set()
        wait_until(lambda: len(observed.done) == 5, 60, "every task ran")
        wait_until(lambda: stage_json(status(observed.ref, "--json", "--window", "0.5"))
                   ["lag"] == 0, 60, "the offsets are committed", interval=0.5)
        healthy = status(observed.ref, "--window", "1")
        assert healthy.exit_code == 0, healthy.output
        assert "healthy" in healthy.stdout and observed.app.get_stage("work").topic in \
            healthy.stdout
    finally:
        observed.gate.set()
        worker.stop()
        thread.join(60)
    assert not errors


@pytest.mark.timeout(180)
def test_a_join_counts_its_pending_forks_from_the_changelog(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    app.join("j", branches=["a", "b"], partitions=2, timeout=600)(lambda task: None)
    for branch in ("a", "b"):
        app.stage(branch)(merged)
    setattr(sys.modules[observed_app.__name__], app.name, app)  # the CLI loads it from there
    ensure(app)
    changelog = app.get_stage("j").changelog_topic
    wait_for_leaders(kafka.bootstrap, [changelog])
    raw = confluent_kafka.Producer({"bootstrap.servers": kafka.bootstrap})
    # F1 gets both branches (stored, then joined: its tombstone follows its state); F2 only
    # one of two, so it waits (its timeout is far off).
    for fork, branch in [("F1", "a"), ("F1", "b"), ("F2", "a")]:
        task = Task.new("j", {"n": 1}, run_id=f"run-{fork}", headers={FORK: fork})
        raw.produce(app.get_stage("j").topic, app.codec.encode(task), fork,
                    headers=[(FROM_STAGE, branch.encode())])
    assert raw.flush(20) == 0
    stats = run_worker(app, ["j"], idle_timeout=3.0)
    assert stats.counts["join.completed"] == 1 and stats.counts["join.branch_stored"] == 2

    ref = f"{observed_app.__name__}:{app.name}"
    result = status(ref, "--json", "--window", "0.5")
    assert result.exit_code == 0, result.output
    stages = {s["stage"]: s for s in orjson.loads(result.stdout)["stages"]}
    assert stages["j"]["pending_forks"] == 1
    assert stages["a"]["pending_forks"] is None  # not a join: its changelog is not read
    table = status(ref, "--stage", "j", "--window", "0.5")
    assert table.exit_code == 0, table.output
    assert "pending forks" in table.stdout
    row = next(line for line in table.stdout.splitlines() if line.startswith("│ j "))
    assert [cell.strip() for cell in row.split("│")][6] == "1", table.stdout


def _run(worker: Worker, errors: list[BaseException]) -> None:
    try:
        worker.run()
    except BaseException as exc:  # surfaced by the test
        errors.append(exc)


def test_bad_arguments_fail_in_one_line() -> None:
    assert_one_line_error(streamtask("status", "no_such_module_xyz:app"), "cannot import")
    assert_one_line_error(streamtask("status", "tests.apps.recorder:app", "--window", "0"),
                          "--window")
    assert_one_line_error(streamtask("status", "tests.apps.recorder:app", "--stage", "nope"),
                          "has no stage 'nope'")
    assert_one_line_error(streamtask("status", "tests.apps.recorder:app", "--watch", "--json"),
                          "do not combine")
