"""START_WORKFLOW: start a new run of another workflow and go on without waiting.

The task's resolved input has Conductor's ``startWorkflow = {name, version, input,
correlationId, ...}``. The workflow must be one of the definitions given to the loader
(``sub_workflows=`` / ``--sub-workflow``); it runs as its own app, under the name
``load_workflow`` gives it by default (the definition's name, sanitised), with its own
workers. The task sends the new run's first task to that app's entry stage and completes
with ``{workflowId}``, as Conductor's does. A name the loader was not given fails the task
with the names it knows (the name is often an expression, so this is known only at run
time); a literal unknown name is reported at load.

Differences from Conductor: ``version``, ``taskToDomain``, ``priority`` and idempotency are
not used. A retried START_WORKFLOW task (its send acknowledged, the task's own result not)
starts the run again, as Conductor's would without an idempotency key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from streamtask.conductor.context import Body
from streamtask.model.envelope import Task
from streamtask.retry import DeadLetter

if TYPE_CHECKING:
    from streamtask.model.workflow import WorkflowApp

Loader = Callable[[Mapping[str, Any]], "WorkflowApp"]
"""Loads a known definition as the app its runs start in (shape only: no handlers run)."""


def starter(known: Mapping[str, Mapping[str, Any]], load: Loader) -> Body:
    """The START_WORKFLOW body, starting runs of the ``known`` definitions."""
    apps: dict[str, WorkflowApp] = {}
    lock = threading.Lock()

    def target(name: str) -> WorkflowApp:
        with lock:
            if name not in apps:
                apps[name] = load(known[name])
            return apps[name]

    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        given = inputs.get("startWorkflow") if isinstance(inputs, Mapping) else None
        if not isinstance(given, Mapping) or not isinstance(given.get("name"), str):
            raise DeadLetter(f"START_WORKFLOW needs startWorkflow.name, got {given!r}")
        name = given["name"]
        if name not in known:
            raise DeadLetter(f"START_WORKFLOW: workflow {name!r} is not one this app was "
                             f"loaded with; known: {', '.join(sorted(known)) or 'none'}")
        start_input = given.get("input")
        correlation = given.get("correlationId") or ctx["workflow"].get("correlationId")
        run_id = target(name).start(start_input if isinstance(start_input, Mapping) else {},
                                    correlation_id=correlation)
        return {"workflowId": run_id}
    return run
