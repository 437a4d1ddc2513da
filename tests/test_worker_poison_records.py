"""Undecodable records, unknown task types and failing handlers never stop the worker;
their offsets move on so they are not retried forever."""

from __future__ import annotations

import confluent_kafka

from streamtask import Task
from tests.inprocess import new_app, run_worker, send_all


def test_bad_records_are_counted_and_skipped(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    ok: list[int] = []

    @app.stage("strict", partitions=1)
    def strict(task: Task) -> None:
        if task.payload["n"] == 3:
            raise RuntimeError("handler bug")
        ok.append(task.payload["n"])

    send_all(app, "strict", [{"n": n} for n in range(5)])
    stranger = app.codec.encode(Task.new("not_a_stage", {"n": 99}))
    raw = confluent_kafka.Producer({"bootstrap.servers": kafka.bootstrap})
    raw.produce("t" + unique + ".strict", b"\x00garbage bytes")
    raw.produce("t" + unique + ".strict", stranger)
    raw.produce("t" + unique + ".strict", b"")
    raw.flush(10)
    send_all(app, "strict", [{"n": 5}])

    stats = run_worker(app, max_tasks=9)
    assert sorted(ok) == [0, 1, 2, 4, 5]
    assert stats.counts["task.failed"] == 1
    assert stats.counts["record.undecodable"] == 2
    assert stats.counts["record.unknown_task_type"] == 1
    again = run_worker(app, idle_timeout=2.0)
    assert sum(again.counts.get(k, 0) for k in (
        "task.succeeded", "task.failed", "record.undecodable")) == 0
