"""A stage's return value becomes the next stage's task, carrying run id and parent id."""

from __future__ import annotations

from streamtask import Task
from tests.inprocess import new_app, run_worker, send_all


def test_result_is_sent_to_the_next_stage(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    received: list[Task] = []

    @app.stage("first", partitions=2, then="second")
    def first(task: Task) -> dict[str, int]:
        return {"doubled": task.payload["n"] * 2}

    @app.stage("second", partitions=2)
    def second(task: Task) -> None:
        received.append(task)

    send_all(app, "first", [{"n": n} for n in range(10)])
    run_worker(app, ["first"], max_tasks=10)
    run_worker(app, ["second"], max_tasks=10)
    assert sorted(t.payload["doubled"] for t in received) == [n * 2 for n in range(10)]
    assert all(t.parent_id and t.run_id == t.parent_id for t in received)
