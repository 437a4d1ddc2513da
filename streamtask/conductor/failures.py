"""``failureWorkflow``: the workflow that runs when a run fails.

It is compiled into the app like a sub-workflow, as stages ``_failure__<task>`` between
``_failure`` and ``_failure_done``. A run goes to ``_failure`` when one of its tasks is
dead-lettered (every stage of the workflow compensates to it), when it ends TIMED_OUT
(its workflow's timeoutSeconds under TIME_OUT_WF), and when it ends FAILED or TERMINATED
by a TERMINATE task or a permissive task's failure. The failure workflow's
input is, as in Conductor, the run's input plus ``workflowId``, ``reason``,
``failureStatus``, ``failureTaskId`` (the dead-lettered task, when one was) and
``failedWorkflow`` (the failed run: id, status, input, output and each task's status).
When it ends, the run ends with its own failure status and reason, and its output gets
``conductor.failure_workflow``: the failure workflow's status and output.

A name given by an expression (``$workflow.input.k`` or ``${workflow.input.k}``) is read
from the run's input when the run fails: ``_failure`` then only chooses among the candidate
failure workflows the loader compiled (stages ``_failure<n>`` ... ``_failure<n>_done``).
With no name in the input, nothing runs (as in Conductor, which starts no workflow for a
blank name); with a name that is not a candidate the run ends FAILED and its
``conductor.failure_workflow`` output says so (Conductor's is an error text there too).

Differences from Conductor: the failure workflow runs inside the failed run (same run id),
and a join or WAIT/HUMAN deadline that dead-letters a run does not start it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from streamtask.conductor.context import FAILED, FRAMES, LAST, RUNNING, Body, Workflow
from streamtask.conductor.subworkflows import child_output
from streamtask.model.envelope import Task

FAILURE = "_failure"
"""The stage a failed run goes to when its workflow has a ``failureWorkflow``."""
HANDLED = "failureHandled"
"""Set in a run's ``workflow`` once its failure workflow started (it starts only once)."""


_INPUT_KEY = re.compile(r"^\$(?:\{workflow\.input\.([A-Za-z0-9_-]+)\}|workflow\.input\."
                        r"([A-Za-z0-9_-]+))$")


def input_key(name: Any) -> str | None:
    """The workflow-input key a ``failureWorkflow`` expression names (None: not one)."""
    found = _INPUT_KEY.match(name) if isinstance(name, str) else None
    return None if found is None else found.group(1) or found.group(2)


def _unwind(ctx: dict[str, Any]) -> None:
    """Failed inside a sub-workflow: the outermost run is what failed."""
    frames = ctx.pop(FRAMES, None) or []
    if frames:
        ctx["workflow"], ctx["tasks"] = frames[0]["workflow"], frames[0]["tasks"]


def _mark_failed(task: Task, ctx: dict[str, Any]) -> tuple[str, str]:
    """The run's failure status and reason, recorded (and the failure handled, once)."""
    failed = ctx["workflow"]
    status = failed.get("status", RUNNING)
    status = FAILED if status == RUNNING else status
    reason = task.headers.get("error") or failed.get("reasonForIncompletion") or status
    failed.update(status=status, reasonForIncompletion=reason, **{HANDLED: True})
    return status, reason


_FAILED_TASK = "failureTaskId"


def choose(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
    """``_failure``'s body when the name is given by an expression: back to the outermost
    run, marked failed (with the dead-lettered task, if one was); the switch after it picks
    the candidate by name."""
    _unwind(ctx)
    _mark_failed(task, ctx)
    if task.headers.get("compensates"):
        ctx[_FAILED_TASK] = task.parent_id
    return {}


def unknown(key: str, known: tuple[str, ...]) -> Body:
    """``_failure_none``'s body: the run's input names no failure workflow (nothing runs), or
    one the app was not loaded with (the run's output says which, and what it knows)."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        _mark_failed(task, ctx)
        ctx.pop(_FAILED_TASK, None)
        ctx["tasks"].pop(FAILURE, None)
        name = (ctx["workflow"].get("input") or {}).get(key)
        if name not in (None, ""):
            output = ctx["workflow"].get("output")
            ctx["workflow"]["output"] = {
                **(output if isinstance(output, Mapping) else {}),
                "conductor.failure_workflow": {
                    "status": FAILED,
                    "error": f"failure workflow {name!r} (workflow.input.{key}) is not one this "
                             f"app was loaded with; known: {', '.join(known) or 'none'}"}}
        return {}
    return run


def start(child: Workflow) -> Body:
    """``_failure``'s body: the failed run set aside, the failure workflow started."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        _unwind(ctx)
        ctx["tasks"].pop(FAILURE, None)  # the record of the choice among candidates
        failed = ctx["workflow"]
        status, reason = _mark_failed(task, ctx)
        summary = {"workflowId": task.run_id, "status": status, "input": failed.get("input"),
                   "output": failed.get("output", {}),
                   "tasks": {ref: t.get("status") for ref, t in ctx["tasks"].items()}}
        given = {**(failed.get("input") or {}), "workflowId": task.run_id, "reason": reason,
                 "failureStatus": status, "failedWorkflow": summary}
        failed_task = task.parent_id if task.headers.get("compensates") else \
            ctx.pop(_FAILED_TASK, None)
        if failed_task is not None:
            given["failureTaskId"] = failed_task
        ctx[FRAMES] = [{"workflow": failed, "tasks": ctx["tasks"], "last": ctx.get(LAST),
                        "ref": FAILURE, "input": given}]
        started = child.new_context(given)
        ctx["workflow"], ctx["tasks"] = started["workflow"], started["tasks"]
        ctx.pop(LAST, None)
        return {}
    return run


def finish(child: Workflow) -> Body:
    """``_failure_done``'s body: the failed run back, with the failure workflow's result."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        status = ctx["workflow"].get("status", RUNNING)
        result = {"status": "COMPLETED" if status == RUNNING else status,
                  "output": child_output(child, ctx, task)}
        frame = ctx[FRAMES].pop()
        ctx.pop(FRAMES, None)
        ctx["workflow"], ctx["tasks"] = frame["workflow"], frame["tasks"]
        output = ctx["workflow"].get("output")
        ctx["workflow"]["output"] = {**(output if isinstance(output, Mapping) else {}),
                                     "conductor.failure_workflow": result}
        return {}
    return run
