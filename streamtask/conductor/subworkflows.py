"""SUB_WORKFLOW: another workflow's tasks run inside the run, in a frame of their own.

A SUB_WORKFLOW task ``s`` compiles the child definition's tasks as stages named
``s__<task>``, between a start stage ``s`` and an end stage ``s_done``. The start stage
pushes a frame: the parent's ``workflow`` and tasks are set aside in the context, and the
child starts with the task's resolved ``inputParameters`` as its ``workflow.input`` (its
``inputTemplate`` and ``variables`` apply) and no tasks, so its expressions see only its
own tasks, as in Conductor. The end stage computes the child's output (its
``outputParameters``, else its last task's output), pops the frame, and records ``s`` in the
parent with that output plus ``subWorkflowId``. A child that ends FAILED or TERMINATED (by
a TERMINATE task) fails ``s``: the run is dead-lettered unless ``s`` is optional or
permissive.

Differences from Conductor: the child runs as part of the parent's run (same run id and
tasks' ``run_id``; ``subWorkflowId`` is ``<run id>/<ref>``), so it cannot be retried or
restarted on its own, and a child task that is dead-lettered dead-letters the whole run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamtask.conductor.context import COMPLETED, FRAMES, LAST, RUNNING, Body, Workflow
from streamtask.conductor.expressions import resolve
from streamtask.model.envelope import Task
from streamtask.retry import DeadLetter


def enter(ref: str, child: Workflow, chosen: str | None = None) -> Body:
    """The start stage's body: set the parent aside, start the child on the input (for a
    child chosen by name, the record of the choice, ``chosen``, is dropped first)."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        if chosen is not None:
            ctx["tasks"].pop(chosen, None)
        frame = {"workflow": ctx["workflow"], "tasks": ctx["tasks"], "last": ctx.get(LAST),
                 "ref": ref, "input": inputs}
        ctx.setdefault(FRAMES, []).append(frame)
        started = child.new_context(inputs if isinstance(inputs, Mapping) else {})
        ctx["workflow"], ctx["tasks"] = started["workflow"], started["tasks"]
        ctx.pop(LAST, None)
        return {}
    return run


def leave(ref: str, child: Workflow) -> Body:
    """The end stage's body: the child's output, recorded as the SUB_WORKFLOW task's."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        if not ctx.get(FRAMES):
            raise DeadLetter(f"sub-workflow {child.name!r} ({ref!r}) ended outside its frame")
        workflow, output = ctx["workflow"], child_output(child, ctx, task)
        frame = ctx[FRAMES].pop()
        status = workflow.get("status", RUNNING)
        failed = status not in (RUNNING, COMPLETED) or workflow.get("permissiveFailure")
        ctx["workflow"], ctx["tasks"] = frame["workflow"], frame["tasks"]
        ctx[LAST] = ref
        ctx["tasks"][ref] = {
            "taskType": "SUB_WORKFLOW", "status": "FAILED" if failed else COMPLETED,
            "input": frame["input"], "referenceTaskName": ref,
            "output": {**output, "subWorkflowId": f"{task.run_id}/{ref}"}}
        if failed:
            reason = workflow.get("reasonForIncompletion") or "no reason given"
            raise DeadLetter(f"sub-workflow {child.name!r} ({ref!r}) ended "
                             f"{'FAILED' if status == RUNNING else status}: {reason}")
        return {}
    return run


def unknown(ref: str, expression: str, chosen: str, known: tuple[str, ...]) -> Body:
    """The body of a SUB_WORKFLOW's ``<task>_unknown``: its name resolved to no workflow the
    app was loaded with; the run is dead-lettered here, saying what it got and knows."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        record = ctx["tasks"].pop(chosen, None) or {}
        got = (record.get("input") or {}).get("name")
        raise DeadLetter(f"SUB_WORKFLOW {ref!r}: workflow {got!r} (from {expression}) is not "
                         f"one this app was loaded with; known: {', '.join(known)}")
    return run


def child_output(child: Workflow, ctx: Mapping[str, Any], task: Task) -> dict[str, Any]:
    """The child's output: a TERMINATE's, its ``outputParameters``, or its last task's."""
    workflow = ctx["workflow"]
    if workflow.get("status", RUNNING) != RUNNING:
        given = workflow.get("output")
    elif child.output_parameters:
        document = {**ctx["tasks"], "workflow": {**workflow, "workflowId": task.run_id,
                                                 "workflowType": child.name}}
        given = resolve(dict(child.output_parameters), document, task.id)
    else:
        given = ctx["tasks"].get(ctx.get(LAST), {}).get("output", {})
    return dict(given) if isinstance(given, Mapping) else {"output": given}
