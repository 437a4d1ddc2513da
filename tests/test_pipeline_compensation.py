"""A dead-lettered task is handed to its stage's compensating stage (saga style)."""

from __future__ import annotations

from streamtask import Task
from streamtask.retry import DeadLetter, RetryPolicy
from tests.inprocess import new_app, run_stages, send_all


def test_failed_shipping_triggers_a_refund(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    refunds: list[Task] = []

    @app.stage("ship", partitions=2, compensate="refund", retry=RetryPolicy(max_attempts=1))
    def ship(task: Task) -> None:
        if task.payload["address"] == "nowhere":
            raise DeadLetter("address does not exist")

    @app.stage("refund", partitions=1)
    def refund(task: Task) -> None:
        refunds.append(task)

    send_all(app, "ship", [{"order": 1, "address": "home"}, {"order": 2, "address": "nowhere"}])
    stats = run_stages(app, {"ship": 2, "refund": 1})
    assert stats["ship"].counts["task.dead_lettered"] == 1
    [refunded] = refunds
    assert refunded.payload == {"order": 2, "address": "nowhere"}
    assert refunded.headers["compensates"] == "ship"
    assert refunded.headers["reason"] == "requested"
    assert "address does not exist" in refunded.headers["error"]
