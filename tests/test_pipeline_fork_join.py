"""Fork/join: one task forks to parallel branches; the join waits for every branch of the
same fork, survives a worker restart, and acts on a timeout (dead-letter or partial)."""

from __future__ import annotations

import time

from streamtask import Task
from streamtask.kafka.headers import DeadLetterRecord
from streamtask.model.pipeline import merged
from tests.inprocess import new_app, run_stages, run_worker, send_all
from tests.test_retry_ladder import read_all


def _order_app(kafka, unique, *, timeout: float = 60.0, on_timeout: str = "dead-letter",
               sms_down: bool = False):
    app = new_app(kafka.bootstrap, unique)
    results: list[Task] = []

    @app.stage("pack", partitions=2, then=("send_email", "send_sms"))
    def pack(task: Task) -> dict[str, object]:
        return {"order": task.payload["order"]}

    @app.stage("send_email", partitions=2, then="notified")
    def send_email(task: Task) -> dict[str, object]:
        return {"email": f"sent #{task.payload['order']}"}

    @app.stage("send_sms", partitions=2, then="notified")
    def send_sms(task: Task) -> dict[str, object]:
        return {"sms": f"sent #{task.payload['order']}"}

    app.join("notified", branches=["send_email", "send_sms"], partitions=2, then="archive",
             timeout=timeout, on_timeout=on_timeout)(merged)

    @app.stage("archive", partitions=1)
    def archive(task: Task) -> None:
        results.append(task)

    return app, results


def test_join_waits_for_every_branch_of_each_fork(kafka, unique) -> None:
    app, results = _order_app(kafka, unique)
    send_all(app, "pack", [{"order": n} for n in range(20)])
    run_stages(app, {"pack": 20, "send_email": 20, "send_sms": 20, "notified": 40,
                     "archive": 20})
    assert sorted(int(t.payload["send_email"]["email"].split("#")[1]) for t in results) == \
        list(range(20))
    assert all(t.payload["send_sms"]["sms"] == t.payload["send_email"]["email"].replace(
        "email", "sms") for t in results)
    assert all("streamtask.fork" not in t.headers for t in results)


def test_join_survives_a_worker_restart(kafka, unique) -> None:
    app, results = _order_app(kafka, unique)
    send_all(app, "pack", [{"order": n} for n in range(5)])
    run_stages(app, {"pack": 5, "send_email": 5})
    first = run_worker(app, ["notified"], max_tasks=5)  # only the email halves: all wait
    assert first.counts.get("join.completed", 0) == 0
    run_stages(app, {"send_sms": 5})
    second = run_worker(app, ["notified"], max_tasks=5)  # a new worker: state from changelog
    assert second.counts["join.completed"] == 5
    run_stages(app, {"archive": 5})
    assert len(results) == 5
    assert all(set(t.payload) == {"send_email", "send_sms"} for t in results)


def test_join_timeout_dead_letters_the_fork(kafka, unique) -> None:
    app, _ = _order_app(kafka, unique, timeout=1.0)
    send_all(app, "pack", [{"order": 1}])
    run_stages(app, {"pack": 1, "send_email": 1})
    started = time.monotonic()
    stats = run_worker(app, ["notified"], idle_timeout=3.0)
    assert stats.counts["join.timed_out"] == 1 and time.monotonic() - started >= 1.0
    [dead] = read_all(kafka.bootstrap, app.stages["notified"].dlq_topic, 1)
    record = DeadLetterRecord.from_message(dead.topic(), dead.partition(), dead.offset(),
                                           dead.key(), dead.value(), dead.headers())
    assert record.reason == "join-timeout" and "send_sms" in record.message
    assert app.codec.decode(dead.value()).payload == {"send_email": {"email": "sent #1"}}


def test_join_timeout_can_emit_partial_results(kafka, unique) -> None:
    app, results = _order_app(kafka, unique, timeout=1.0, on_timeout="partial")
    send_all(app, "pack", [{"order": 1}])
    run_stages(app, {"pack": 1, "send_email": 1})
    run_worker(app, ["notified"], max_tasks=2, idle_timeout=4.0)
    run_stages(app, {"archive": 1})
    [partial] = results
    assert partial.payload == {"send_email": {"email": "sent #1"}}
    assert partial.headers["join.missing"] == "send_sms"
