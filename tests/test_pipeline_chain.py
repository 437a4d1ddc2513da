"""Three stages chained: each result becomes the next stage's task in the same run."""

from __future__ import annotations

from streamtask import Task
from tests.inprocess import new_app, run_stages, send_all


def test_three_stage_chain(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    done: list[Task] = []

    @app.stage("validate", partitions=2, then="charge")
    def validate(task: Task) -> dict[str, object]:
        return {**task.payload, "valid": True}

    @app.stage("charge", partitions=2, then="ship")
    def charge(task: Task) -> dict[str, object]:
        return {**task.payload, "charged": task.payload["amount"]}

    @app.stage("ship", partitions=2)
    def ship(task: Task) -> None:
        done.append(task)

    send_all(app, "validate", [{"order": n, "amount": n * 10} for n in range(50)])
    run_stages(app, {"validate": 50, "charge": 50, "ship": 50})
    assert sorted(t.payload["order"] for t in done) == list(range(50))
    assert all(t.payload["valid"] and t.payload["charged"] == t.payload["order"] * 10
               for t in done)
    assert all(t.run_id != t.id and t.parent_id for t in done)
