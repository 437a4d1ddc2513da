"""Payloads a stage passes on: unchanged ones travel as the bytes they came in, changed ones
are encoded again, and the next stage sees exactly what the handler returned."""

from __future__ import annotations

from typing import Any

from streamtask import Task
from streamtask.model.envelope import DecodedRecord
from tests.inprocess import new_app, run_stages, send_all

ORDER = {"type": "record", "name": "Order", "namespace": "passthrough",
         "fields": [{"name": "order", "type": "int"}, {"name": "amount", "type": "int"}]}


def test_unchanged_and_in_place_changed_payloads_reach_the_next_stage(kafka, unique) -> None:
    app = new_app(kafka.bootstrap, unique)
    done: list[Task] = []

    @app.stage("receive", partitions=2, payload=ORDER, then="double")
    def receive(task: Task) -> Any:
        assert isinstance(task.payload, DecodedRecord)
        return task.payload  # unchanged: written as the bytes it arrived as

    @app.stage("double", partitions=2, payload=ORDER, then="record")
    def double(task: Task) -> Any:
        payload = task.payload
        payload["amount"] *= 2  # changed in place: must be encoded again, not passed on
        return payload

    @app.stage("record", partitions=2, payload=ORDER)
    def record(task: Task) -> None:
        done.append(task)

    send_all(app, "receive", [{"order": n, "amount": n + 1} for n in range(20)])
    run_stages(app, {"receive": 20, "double": 20, "record": 20})
    assert sorted((t.payload["order"], t.payload["amount"]) for t in done) == [
        (n, 2 * (n + 1)) for n in range(20)]
