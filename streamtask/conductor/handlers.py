"""The stage handlers of a workflow app: a :class:`Step` around the user's code or a body.

A SIMPLE task's handler is the user's function, called with a task whose payload is the
resolved input; what it returns is the task's output (``None`` is ``{}``). ``async``
handlers stay ``async`` so the worker runs them on its event loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from streamtask.conductor.context import Body, Step
from streamtask.conductor.failures import HANDLED
from streamtask.model.app import Handler
from streamtask.model.envelope import Task
from streamtask.model.pipeline import Send


def step_handler(step: Step, user: Handler | None, body: Body | None) -> Handler:
    """The handler of a workflow stage: ``user``'s for a SIMPLE task, else ``body``."""
    if user is not None and inspect.iscoroutinefunction(user):
        async def run_async(task: Task) -> Any:
            return await step.run_async(task, user)
        return run_async
    if user is not None:
        simple: Handler = user

        def run_simple(task: Task) -> Any:
            return step.run(task, lambda inner, _inputs, _ctx: simple(inner))
        return run_simple
    assert body is not None, f"step {step.ref!r} has neither a handler nor a body"
    system: Body = body

    def run_system(task: Task) -> Any:
        return step.run(task, system)
    return run_system


def end_handler(on_end: Handler | None, failure: str | None = None) -> Handler:
    """The handler of the end stage: tells ``on_end`` (if any) and ends the run. A run that
    ended FAILED, TERMINATED or TIMED_OUT goes to its ``failure`` workflow first, once."""
    def end(task: Task) -> Send | None:
        workflow = task.payload.get("workflow", {}) if isinstance(task.payload, Mapping) \
            else {}
        if failure is not None and not workflow.get(HANDLED) and \
                workflow.get("status") in ("FAILED", "TERMINATED", "TIMED_OUT"):
            return Send(failure, task.payload)
        if on_end is not None:
            on_end(task)
        return None
    return end
