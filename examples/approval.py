"""Expense approval: a person in the loop, as a Conductor HUMAN task with a deadline.

``approval.json`` (next to this file): submit -> approve (HUMAN, deadline one day) ->
approved? cool off (WAIT 2 seconds) and pay : terminate as rejected. The run waits for the
approver without holding a worker or a partition; the waiting state is in Kafka, so workers
may restart meanwhile::

    streamtask topics ensure examples.approval:app
    streamtask worker examples.approval:app &
    streamtask workflow start examples.approval:app --input '{"employee": "ann", "amount": 42}'
    streamtask signal examples.approval:app RUN_ID approval_ref \\
        --output '{"approved": true, "approver": "bob"}'

A run nobody signals before the deadline is dead-lettered at ``approve_resume``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamtask import KafkaSettings, Task
from streamtask.model.app import Handler
from streamtask.model.workflow import WorkflowApp, load_workflow

DEFINITION = Path(__file__).with_name("approval.json")


def submit(task: Task) -> dict[str, Any]:
    return {"employee": task.payload["employee"], "amount": float(task.payload["amount"])}


def pay(task: Task) -> dict[str, Any]:
    return {"payment_id": f"pay-{task.payload['employee']}-{task.payload['amount']:g}"}


HANDLERS: dict[str, Handler] = {"submit": submit, "pay": pay}


def build(*, name: str | None = None, kafka: KafkaSettings | None = None,
          deadline: float | None = None, on_end: Handler | None = None) -> WorkflowApp:
    """The app; ``deadline`` (seconds) replaces the approval's one day."""
    definition = json.loads(DEFINITION.read_text())
    if deadline is not None:
        definition["tasks"][1]["taskDefinition"]["timeoutSeconds"] = deadline
    return load_workflow(definition, HANDLERS, kafka=kafka, name=name, on_end=on_end)


app = build()
