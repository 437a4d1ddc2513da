"""The Conductor order-fulfillment workflow runs end to end on Kafka: every order started
with app.start is validated, paid (retrying the gateway's first-attempt timeouts),
reserved, notified by email and by SMS, joined, and finishes with the workflow output its
outputParameters describe, built from the tasks' outputs."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from examples import order_fulfillment as example
from streamtask import Task
from streamtask.conductor.context import END, RunResult, run_result
from streamtask.kafka.topics import ensure
from tests.inprocess import run_stages

ORDERS = 16


def order(n: int) -> dict[str, Any]:
    return {"order_id": f"o-{n}", "customer": {"email": f"c{n}@example.com",
                                                "phone": f"+1555010{n:02d}"},
            "items": [{"sku": "mug", "qty": 1 + n % 3}], "total": 9.5 + n}


@pytest.mark.timeout(180)
def test_every_order_is_paid_notified_twice_and_joined(kafka, unique) -> None:
    seen: dict[str, list[Task]] = defaultdict(list)
    finished: list[RunResult] = []
    lock = threading.Lock()

    def recorded(name: str, handler: Callable[[Task], Any]) -> Callable[[Task], Any]:
        def run(task: Task) -> Any:
            result = handler(task)  # record only what succeeded
            with lock:
                seen[name].append(task)
            return result
        return run

    def on_end(task: Task) -> None:
        with lock:
            finished.append(run_result(task))

    handlers = {name: recorded(name, h) for name, h in example.HANDLERS.items()}
    app = example.build(name=f"t{unique}", kafka=kafka.settings, handlers=handlers,
                        on_end=on_end)
    ensure(app)
    orders = [order(n) for n in range(ORDERS)]
    flaky = [o["order_id"] for o in orders if example.gateway_times_out(o["order_id"])]
    assert flaky, "the sample needs orders whose payment is retried"
    run_ids = {app.start(o): o["order_id"] for o in orders}

    stats = run_stages(app, {
        "validate_order": ORDERS,
        "process_payment": ORDERS + len(flaky),  # a retried attempt ends a task too
        "update_inventory": ORDERS,
        "send_email": ORDERS,
        "send_sms": ORDERS,
        "send_notification_join": 2 * ORDERS,  # each branch's arrival, then the join
        END: ORDERS,
    }, idle_timeout=30.0)

    ids = sorted(o["order_id"] for o in orders)
    for stage in ("validate_order", "process_payment", "update_inventory", "send_email",
                  "send_sms"):
        assert sorted(t.payload["order_id"] for t in seen[stage]) == ids, stage
    assert stats["process_payment"].counts["task.retried"] == len(flaky)
    attempts = {t.payload["order_id"]: t.attempt for t in seen["process_payment"]}
    assert {oid for oid, attempt in attempts.items() if attempt == 2} == set(flaky)
    # each handler got exactly its resolved inputParameters
    email = {t.payload["order_id"]: t.payload for t in seen["send_email"]}
    assert email["o-3"] == {"order_id": "o-3", "to": "c3@example.com"}
    payment = {t.payload["order_id"]: t.payload for t in seen["process_payment"]}
    assert payment["o-2"] == {"order_id": "o-2", "amount": 11.5}

    assert sorted(r.workflow_id for r in finished) == sorted(run_ids)
    for result in finished:
        oid = run_ids[result.workflow_id]
        n = int(oid[2:])
        assert result.status == "COMPLETED"
        assert result.output == {
            "order_id": oid, "payment_id": f"pay-{oid}",
            "payment_attempts": 2 if oid in flaky else 1,
            "reserved": {"mug": 1 + n % 3},
            "notified": [f"c{n}@example.com", f"+1555010{n:02d}"]}
        assert result.tasks["send_notification_join"]["output"] == {
            "email_ref": {"channel": "email", "to": f"c{n}@example.com",
                          "subject": f"Order {oid} is on its way"},
            "sms_ref": {"channel": "sms", "to": f"+1555010{n:02d}"}}
