"""FORK_JOIN_DYNAMIC: a fork over a task list computed at run time, and its JOIN.

The list is the task's input parameter named by ``dynamicForkTasksParam`` (WorkflowTask
objects), with each task's input in the map named by ``dynamicForkTasksInputParamName``
(by reference name; a task without an entry resolves its own ``inputParameters``). The
newer form, ``forkTaskName`` / ``forkTaskType`` with a list ``forkTaskInputs``, forks one
task per input, referenced ``_<name>_<i>``.

The dynamic fork and the JOIN after it run as one stage: the forked tasks run side by side
in that stage's worker (SIMPLE ones with the handler of their name; INLINE, LAMBDA,
JSON_JQ_TRANSFORM and HTTP as their system tasks), each is recorded under its reference
name, and the JOIN's output maps each reference name to its task's output. **Difference
from Conductor:** the forked tasks are not spread over workers and are retried together
(the stage's retries), since the stages of a streamtask app are fixed when it loads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streamtask.conductor.context import COMPLETED, Body
from streamtask.conductor.expressions import resolve
from streamtask.conductor.scripts import run_javascript
from streamtask.conductor.systemtasks import http, inline, json_jq_transform
from streamtask.model.app import Handler
from streamtask.model.envelope import Task
from streamtask.retry import DeadLetter

MAX_PARALLEL = 8
"""Forked tasks run at once in one stage's worker."""
_SYSTEM: dict[str, Body] = {"INLINE": inline, "JSON_JQ_TRANSFORM": json_jq_transform,
                            "HTTP": http}


def forked(tasks_param: str | None, inputs_param: str | None, join_ref: str,
           handlers: Mapping[str, Handler]) -> Body:
    """The stage's body: run every forked task, record each, and the JOIN's output."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        listed = tasks_of(inputs, tasks_param, inputs_param)
        document = {**ctx["tasks"], "workflow": {**ctx["workflow"], "workflowId": task.run_id}}
        calls = [(t, call(t, handlers)) for t in listed]
        with ThreadPoolExecutor(min(MAX_PARALLEL, max(len(calls), 1))) as pool:
            futures = [(t, pool.submit(fn, task.with_(
                type=str(t["name"]), payload=resolve(t.get("input", {}), document, task.id)),
                ctx)) for t, fn in calls]
            outputs = {t["taskReferenceName"]: future.result() for t, future in futures}
        for ref, output in outputs.items():
            ctx["tasks"][ref] = {"taskType": "SIMPLE", "status": COMPLETED, "output": output,
                                 "referenceTaskName": ref}
        ctx["tasks"][join_ref] = {"taskType": "JOIN", "status": COMPLETED, "output": outputs,
                                  "referenceTaskName": join_ref}
        return {"forkedTasks": list(outputs)}
    return run


def tasks_of(inputs: Any, tasks_param: str | None,
             inputs_param: str | None) -> list[dict[str, Any]]:
    """The forked tasks, each with its ``input`` template, checked."""
    inputs = inputs if isinstance(inputs, Mapping) else {}
    if tasks_param is None:
        name, kind = inputs.get("forkTaskName"), inputs.get("forkTaskType") or "SIMPLE"
        given = inputs.get("forkTaskInputs")
        if not isinstance(name, str) or not isinstance(given, list):
            raise DeadLetter("FORK_JOIN_DYNAMIC: forkTaskName and a list forkTaskInputs "
                             "are needed")
        return [{"name": name, "type": kind, "taskReferenceName": f"_{name}_{i}",
                 "input": item} for i, item in enumerate(given)]
    listed, by_ref = inputs.get(tasks_param), inputs.get(inputs_param or "") or {}
    if not isinstance(listed, list) or not all(
            isinstance(t, Mapping) and isinstance(t.get("taskReferenceName"), str)
            for t in listed):
        raise DeadLetter(f"FORK_JOIN_DYNAMIC: input {tasks_param!r} must be a list of tasks "
                         f"with a taskReferenceName, not {str(listed)[:80]}")
    return [{**t, "name": t.get("name") or t["taskReferenceName"],
             "input": by_ref.get(t["taskReferenceName"], t.get("inputParameters") or {})
             if isinstance(by_ref, Mapping) else t.get("inputParameters") or {}}
            for t in listed]


def call(task: Mapping[str, Any], handlers: Mapping[str, Handler]) -> Callable[..., Any]:
    """How one forked task runs: ``fn(task with its input as payload, ctx) -> output``."""
    kind, name = task.get("type") or "SIMPLE", str(task["name"])
    if kind == "SIMPLE":
        handler = handlers.get(name)
        if handler is None or inspect.iscoroutinefunction(handler):
            raise DeadLetter(f"FORK_JOIN_DYNAMIC: no (synchronous) handler for task {name!r}")
        return lambda inner, ctx: _output(handler(inner))
    if kind == "LAMBDA":
        return lambda inner, ctx: {"result": run_javascript(
            str(inner.payload.get("scriptExpression", "")), inner.payload, function_body=True)}
    body = _SYSTEM.get(str(kind))
    if body is None:
        raise DeadLetter(f"FORK_JOIN_DYNAMIC: task {name!r} of type {kind!r} cannot be forked "
                         f"dynamically (SIMPLE, {', '.join(sorted(_SYSTEM))} or LAMBDA)")
    return lambda inner, ctx: body(inner, inner.payload, ctx)


def _output(value: Any) -> Any:
    return {} if value is None else value
