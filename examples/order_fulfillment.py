"""Order fulfilment: a Conductor workflow definition run by streamtask workers.

``order_fulfillment.json`` (next to this file) is the workflow, in Conductor's shape:
validate_order -> process_payment -> update_inventory -> fork(send_email, send_sms) -> join.
This module supplies the handlers, one per SIMPLE task, and builds the app::

    streamtask topics ensure examples.order_fulfillment:app
    streamtask worker examples.order_fulfillment:app
    streamtask workflow start examples.order_fulfillment:app --input \\
        '{"order_id": "o-1", "customer": {"email": "a@example.com", "phone": "+15550100"},
          "items": [{"sku": "mug", "qty": 2}], "total": 18.5}'

process_payment's gateway times out on the first attempt for about one order in four, so
the retry ladder shows (Conductor's ``retryCount: 3`` allows three more tries). Conductor
waits 60 s between retries by default; this example waits one second.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamtask import KafkaSettings, Task
from streamtask.model.app import Handler
from streamtask.model.workflow import WorkflowApp, load_workflow
from streamtask.retry import DeadLetter

DEFINITION = Path(__file__).with_name("order_fulfillment.json")
RETRY_DELAY_SECONDS = 1.0


def gateway_times_out(order_id: str) -> bool:
    """Whether the (simulated) payment gateway times out on this order's first attempt."""
    return zlib.crc32(order_id.encode()) % 4 == 0


def validate_order(task: Task) -> dict[str, Any]:
    order = task.payload
    if not order.get("items") or not order.get("total", 0) > 0:
        raise DeadLetter(f"order {order.get('order_id')!r} has no items or no total")
    return {"order_id": order["order_id"], "total": order["total"], "valid": True}


def process_payment(task: Task) -> dict[str, Any]:
    order_id = task.payload["order_id"]
    if task.attempt == 1 and gateway_times_out(order_id):
        raise ConnectionError("payment gateway timed out")  # retried after a second
    return {"payment_id": f"pay-{order_id}", "amount": task.payload["amount"],
            "attempts": task.attempt}


def update_inventory(task: Task) -> dict[str, Any]:
    return {"reserved": {item["sku"]: item["qty"] for item in task.payload["items"]}}


def send_email(task: Task) -> dict[str, Any]:
    order_id = task.payload["order_id"]
    return {"channel": "email", "to": task.payload["to"],
            "subject": f"Order {order_id} is on its way"}


def send_sms(task: Task) -> dict[str, Any]:
    return {"channel": "sms", "to": task.payload["to"]}


HANDLERS: dict[str, Handler] = {
    "validate_order": validate_order,
    "process_payment": process_payment,
    "update_inventory": update_inventory,
    "send_email": send_email,
    "send_sms": send_sms,
}
"""The handlers by task name. Each gets its task's resolved ``inputParameters`` as
``task.payload``; what it returns is the task's output, which later tasks and the
workflow's ``outputParameters`` refer to."""


def build(*, name: str | None = None, kafka: KafkaSettings | None = None,
          handlers: Mapping[str, Handler] | None = None,
          on_end: Handler | None = None) -> WorkflowApp:
    """The app, optionally under another ``name``, with some handlers replaced, or with
    ``on_end`` told of every finished run."""
    return load_workflow(DEFINITION, {**HANDLERS, **(handlers or {})}, kafka=kafka, name=name,
                         task_defaults={"retryDelaySeconds": RETRY_DELAY_SECONDS},
                         on_end=on_end)


app = build()
