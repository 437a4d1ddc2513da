"""The Conductor order-fulfillment workflow runs end to end on Kafka: every order is
validated, paid (retrying the gateway's first-attempt timeouts), reserved, notified by
email and by SMS, and the join sees both notifications of each order."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from examples import order_fulfillment as example
from streamtask import Task
from streamtask.pipeline import merged
from streamtask.topics import ensure
from tests.inprocess import run_stages

ORDERS = 16


def order(n: int) -> dict[str, Any]:
    return {"order_id": f"o-{n}", "customer": {"email": f"c{n}@example.com",
                                                "phone": f"+1555010{n:02d}"},
            "items": [{"sku": "mug", "qty": 1 + n % 3}], "total": 9.5 + n}


@pytest.mark.timeout(180)
def test_every_order_is_paid_notified_twice_and_joined(kafka, unique) -> None:
    seen: dict[str, list[Task]] = defaultdict(list)
    lock = threading.Lock()

    def recorded(name: str, handler: Callable[[Task], Any]) -> Callable[[Task], Any]:
        def run(task: Task) -> Any:
            result = handler(task)  # record only what succeeded
            with lock:
                seen[name].append(task)
            return result
        return run

    handlers = {name: recorded(name, h) for name, h in example.HANDLERS.items()}
    handlers["send_notification_join"] = recorded("send_notification_join", merged)
    app = example.build(name=f"t{unique}", kafka=kafka.settings, handlers=handlers)
    ensure(app)
    orders = [order(n) for n in range(ORDERS)]
    flaky = [o["order_id"] for o in orders if example.gateway_times_out(o["order_id"])]
    assert flaky, "the sample needs orders whose payment is retried"
    with app.producer() as producer:
        producer.send_many("validate_order", orders, key=lambda o: o["order_id"])

    stats = run_stages(app, {
        "validate_order": ORDERS,
        "process_payment": ORDERS + len(flaky),  # a retried attempt ends a task too
        "update_inventory": ORDERS,
        "send_email": ORDERS,
        "send_sms": ORDERS,
        "send_notification_join": 2 * ORDERS,  # each branch's arrival, then the join
    }, idle_timeout=30.0)

    ids = sorted(o["order_id"] for o in orders)
    for stage in ("validate_order", "process_payment", "update_inventory", "send_email",
                  "send_sms"):
        assert sorted(t.payload["order_id"] for t in seen[stage]) == ids, stage
    assert stats["process_payment"].counts["task.retried"] == len(flaky)
    attempts = {t.payload["order_id"]: t.attempt for t in seen["process_payment"]}
    assert {oid for oid, attempt in attempts.items() if attempt == 2} == set(flaky)

    joined = {t.payload["send_email"]["order_id"]: t.payload
              for t in seen["send_notification_join"]}
    assert sorted(joined) == ids
    for oid, payload in joined.items():
        assert set(payload) == {"send_email", "send_sms"}
        assert payload["send_email"] == {"order_id": oid, "channel": "email",
                                         "to": f"c{oid[2:]}@example.com",
                                         "subject": f"Order {oid} is on its way"}
        assert payload["send_sms"]["channel"] == "sms"
        assert payload["send_sms"]["order_id"] == oid
    runs = {t.run_id for t in seen["send_notification_join"]}
    assert len(runs) == ORDERS  # one join per order's run
