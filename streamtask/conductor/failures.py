"""``failureWorkflow``: the workflow that runs when a run fails.

It is compiled into the app like a sub-workflow, as stages ``_failure__<task>`` between
``_failure`` and ``_failure_done``. A run goes to ``_failure`` when one of its tasks is
dead-lettered (every stage of the workflow compensates to it) and when it ends FAILED or
TERMINATED by a TERMINATE task or a permissive task's failure. The failure workflow's
input is, as in Conductor, the run's input plus ``workflowId``, ``reason``,
``failureStatus``, ``failureTaskId`` (the dead-lettered task, when one was) and
``failedWorkflow`` (the failed run: id, status, input, output and each task's status).
When it ends, the run ends with its own failure status and reason, and its output gets
``conductor.failure_workflow``: the failure workflow's status and output.

Differences from Conductor: the failure workflow runs inside the failed run (same run id),
and a join or WAIT/HUMAN deadline that dead-letters a run does not start it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamtask.conductor.context import FAILED, LAST, RUNNING, Body, Workflow
from streamtask.conductor.subworkflows import FRAMES, child_output
from streamtask.envelope import Task

FAILURE = "_failure"
"""The stage a failed run goes to when its workflow has a ``failureWorkflow``."""
HANDLED = "failureHandled"
"""Set in a run's ``workflow`` once its failure workflow started (it starts only once)."""


def start(child: Workflow) -> Body:
    """``_failure``'s body: the failed run set aside, the failure workflow started."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        frames = ctx.pop(FRAMES, None) or []
        if frames:  # failed inside a sub-workflow: the outermost run is what failed
            ctx["workflow"], ctx["tasks"] = frames[0]["workflow"], frames[0]["tasks"]
        failed = ctx["workflow"]
        status = failed.get("status", RUNNING)
        status = FAILED if status == RUNNING else status
        reason = task.headers.get("error") or failed.get("reasonForIncompletion") or status
        failed.update(status=status, reasonForIncompletion=reason, **{HANDLED: True})
        summary = {"workflowId": task.run_id, "status": status, "input": failed.get("input"),
                   "output": failed.get("output", {}),
                   "tasks": {ref: t.get("status") for ref, t in ctx["tasks"].items()}}
        given = {**(failed.get("input") or {}), "workflowId": task.run_id, "reason": reason,
                 "failureStatus": status, "failedWorkflow": summary}
        if task.headers.get("compensates"):
            given["failureTaskId"] = task.parent_id
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
