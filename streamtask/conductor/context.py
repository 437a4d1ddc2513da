"""A workflow run's context, carried with its tasks, and the stage handlers that use it.

Every task of a workflow app carries its run's context as its payload: the workflow's input
and variables, and each finished task's input, output and status by reference name. A stage
of the workflow runs a :class:`Step`: it resolves the task's ``inputParameters`` against the
context, hands the result to the user's handler as ``task.payload``, records what the
handler returned as the task's output, and passes the grown context on. A join merges its
branches' contexts. The context is bounded (:attr:`Workflow.context_limit`): a run whose
context would outgrow it is dead-lettered with a message saying so, before its record could
be refused by the broker.

Why carry the context rather than keep it in a compacted per-run state topic: every stage
then has all it needs in the record it consumes, so no stage reads another topic, caches
state or waits for a state write to be visible; a retry re-reads exactly the context its
first attempt saw; and the at-least-once guarantee of the task records covers the context
for free. The cost is that a context grows with every task and travels with each of them,
so runs whose outputs are large should pass references (object-store keys), as Conductor
itself advises for payloads above a few hundred kilobytes.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from streamtask import clock
from streamtask.conductor.expressions import resolve
from streamtask.conductor.scripts import run_javascript
from streamtask.errors import RoutingError
from streamtask.model.envelope import Task
from streamtask.model.pipeline import Send, Switch
from streamtask.retry import DeadLetter, DeadLettered, RetryPolicy, decide
from streamtask.worker.joins import FORK

if TYPE_CHECKING:
    from streamtask.conductor.loops import Loop

END = "_end"
"""The stage every finished run is sent to; its topic holds each run's final context."""
CASE = "case"
"""The context key a switch routes on (set by the stage in front of the switch)."""
LAST = "last"
"""The context key naming the last task that ran (the default workflow output)."""
DEFAULT_CONTEXT_LIMIT = 900_000
"""Bytes of JSON a run's context may take; below the stages' 1 MB record limit."""

RUNNING, COMPLETED, FAILED, TIMED_OUT = "RUNNING", "COMPLETED", "FAILED", "TIMED_OUT"
FRAMES = "frames"
"""The context key holding the parents of the running sub-workflow, innermost last."""
DEADLINE = "deadline"
"""The context key of a run's workflow timeout: ``{at, seconds, policy}`` (see
:meth:`Step.overdue`)."""
log = logging.getLogger("streamtask.workflow")
ROUTE = "ROUTE"
"""The task type of a routing stage: it passes the context on to a fork or switch."""

Body = Callable[[Task, Any, dict[str, Any]], Any]
"""What a step does: (task with the resolved input as payload, that input, context) ->
output. It may change the context (SET_VARIABLE, TERMINATE)."""


@dataclass(frozen=True)
class Workflow:
    """What every step of one workflow needs to know about it."""

    name: str
    version: int | None = None
    output_parameters: Mapping[str, Any] = field(default_factory=dict)
    input_template: Mapping[str, Any] = field(default_factory=dict)
    variables: Mapping[str, Any] = field(default_factory=dict)
    context_limit: int = DEFAULT_CONTEXT_LIMIT
    timeout: float = 0.0
    """The workflow's ``timeoutSeconds`` (0: none), counted from the run's start."""
    timeout_policy: str = "ALERT_ONLY"

    def new_context(self, workflow_input: Mapping[str, Any] | None,
                    correlation_id: str | None = None) -> dict[str, Any]:
        """The context a run starts with. As in Conductor, ``inputTemplate`` fills keys the
        input leaves out, but only when the input is not empty."""
        given = dict(workflow_input or {})
        if given:
            given = {**self.input_template, **given}
        ctx: dict[str, Any] = {
            "workflow": {"input": given, "variables": copy.deepcopy(dict(self.variables)),
                         "status": RUNNING, "correlationId": correlation_id},
            "tasks": {}}
        if self.timeout > 0:
            ctx[DEADLINE] = {"at": clock.now_ms() + round(self.timeout * 1000),
                             "seconds": self.timeout, "policy": self.timeout_policy}
        return ctx


@dataclass(frozen=True)
class SwitchSpec:
    """A SWITCH or DECISION: which case the run takes, evaluated after the step before it."""

    ref: str
    evaluator: str
    """``value-param`` (the input parameter named by ``expression``) or ``javascript``."""
    expression: str
    inputs: Any
    loop: Loop | None = None
    """Set for a DO_WHILE's start (``loop-start``) and check (``loop``) stages."""


@dataclass(frozen=True)
class Step:
    """One workflow stage's work around its task (see the module docstring)."""

    workflow: Workflow
    ref: str
    task_type: str
    inputs: Any = None
    input_template: Mapping[str, Any] = field(default_factory=dict)
    switch: SwitchSpec | None = None
    route: Switch | None = None
    """The switch after this step (its cases may end the run)."""
    ends: bool = False
    tolerate: str | None = None
    """``optional`` or ``permissive``: a failure past the last retry lets the run go on."""
    retry: RetryPolicy | None = None
    join_on: tuple[str, ...] = ()
    waits: tuple[str, str] | None = None
    """For a WAIT/HUMAN resume join: its park and signal stages (see ``waits``)."""

    def begin(self, task: Task) -> tuple[dict[str, Any], Any]:
        """The run's context (a copy) and this task's resolved input."""
        if self.waits is not None:
            ctx = self.parked(task.payload, *self.waits)
        elif self.task_type == "JOIN":
            ctx = self.merged(task.payload)
        else:
            ctx = context_of_payload(task.payload, self.workflow)
        template = self.inputs if isinstance(self.inputs, Mapping) else {}
        inputs = resolve({**self.input_template, **template}, document(self, ctx, task),
                         task.id)
        for key, value in self.input_template.items():  # Conductor: null -> template value
            if inputs.get(key) is None:
                inputs[key] = value
        return ctx, inputs

    def merged(self, branches: Any) -> dict[str, Any]:
        """A join's context: every branch's tasks and variables in one."""
        contexts = [context_of_payload(p, self.workflow) for p in branches.values()] \
            if isinstance(branches, Mapping) else []
        if not contexts:
            raise DeadLetter(f"join {self.ref!r} got no branch contexts")
        ctx = contexts[0]
        for other in contexts[1:]:
            ctx["tasks"].update(other["tasks"])
            ctx["workflow"]["variables"].update(other["workflow"].get("variables") or {})
        return ctx

    def parked(self, branches: Any, park: str, signal: str) -> dict[str, Any]:
        """A resumed WAIT/HUMAN: the parked run's context, with the signal (if one came)
        under ``signal`` for the body to take."""
        parts = branches if isinstance(branches, Mapping) else {}
        if park not in parts:
            raise DeadLetter(f"a signal for {self.ref!r} arrived but its run was not waiting "
                             "there")
        ctx = context_of_payload(parts[park], self.workflow)
        sent = parts.get(signal)
        if isinstance(sent, Mapping) and isinstance(sent.get("signal"), Mapping):
            ctx["signal"] = dict(sent["signal"])
        return ctx

    def run(self, task: Task, body: Body) -> Any:
        """Begin, run ``body``, finish: the whole step for a synchronous body."""
        ctx, inputs = self.begin(task)
        ended = self.overdue(task, ctx)
        if ended is not None:
            return ended
        try:
            output = body(task.with_(payload=inputs), inputs, ctx)
        except Exception as exc:
            return self.failed(task, ctx, inputs, exc)
        return self.finish(task, ctx, inputs, output)

    async def run_async(self, task: Task, body: Callable[[Task], Any]) -> Any:
        """The step around an ``async`` handler."""
        ctx, inputs = self.begin(task)
        ended = self.overdue(task, ctx)
        if ended is not None:
            return ended
        try:
            output = await body(task.with_(payload=inputs))
        except Exception as exc:
            return self.failed(task, ctx, inputs, exc)
        return self.finish(task, ctx, inputs, output)

    def overdue(self, task: Task, ctx: dict[str, Any]) -> Send | None:
        """The run past its workflow's ``timeoutSeconds``, checked as each task starts
        (outside fork branches, whose join checks after them): under TIME_OUT_WF it ends
        here, TIMED_OUT, without running the task (the end stage starts its failure
        workflow); under ALERT_ONLY it is logged once and goes on."""
        deadline = ctx.get(DEADLINE)
        if not isinstance(deadline, dict) or FORK in task.headers or \
                clock.now_ms() < deadline.get("at", 0):
            return None
        frames = ctx.get(FRAMES) or []
        top = frames[0]["workflow"] if frames else ctx["workflow"]
        if top.get("status", RUNNING) != RUNNING:
            return None  # it already ended: its failure workflow runs
        reason = f"workflow timed out after {deadline.get('seconds'):g}s (timeoutSeconds)"
        if deadline.get("policy") != "TIME_OUT_WF":
            if not deadline.get("alerted"):
                deadline["alerted"] = True
                log.warning("workflow.timed_out run=%s task=%s policy=ALERT_ONLY: %s",
                            task.run_id, self.ref, reason,
                            extra={"event": "workflow.timed_out", "fields": {
                                "run_id": task.run_id, "task": self.ref,
                                "policy": "ALERT_ONLY", "reason": reason}})
            return None
        if frames:  # inside a sub-workflow: the outermost run is what timed out
            ctx["workflow"], ctx["tasks"] = top, frames[0]["tasks"]
            ctx.pop(FRAMES)
        top.update(status=TIMED_OUT, reasonForIncompletion=reason)
        top.setdefault("output", {})
        return Send(END, ctx)

    def failed(self, task: Task, ctx: dict[str, Any], inputs: Any, exc: Exception) -> Any:
        """Re-raise unless the task tolerates failure and this failure would dead-letter."""
        if self.tolerate is None or self.retry is None or \
                not isinstance(decide(task.attempt, exc, self.retry, 0), DeadLettered):
            raise exc
        status = "COMPLETED_WITH_ERRORS" if self.tolerate == "optional" else FAILED
        if self.tolerate == "permissive":
            ctx["workflow"]["permissiveFailure"] = self.ref
        return self.finish(task, ctx, inputs, {}, status=status,
                           reason=f"{type(exc).__name__}: {exc}")

    def finish(self, task: Task, ctx: dict[str, Any], inputs: Any, output: Any, *,
               status: str = COMPLETED, reason: str | None = None) -> dict[str, Any]:
        """Record the task, pick the switch case or the run's output, check the bound."""
        record = {"taskType": self.task_type, "status": status, "input": inputs,
                  "output": {} if output is None else output, "taskId": task.id,
                  "retryCount": task.attempt - 1, "referenceTaskName": self.ref}
        if reason is not None:
            record["reasonForIncompletion"] = reason
        if self.task_type == "DO_WHILE" and isinstance(output, Mapping):
            record["iteration"] = output.get("iteration")
        if self.task_type != ROUTE:
            ctx["tasks"][self.ref] = record
            ctx[LAST] = self.ref
        ctx.pop(CASE, None)
        if self.switch is not None:
            ctx[CASE] = self.case(task, ctx)
        if self.ends or self.leads_to_end(ctx):
            self.complete(task, ctx)
        size = len(orjson.dumps(ctx, option=orjson.OPT_NON_STR_KEYS))
        if size > self.workflow.context_limit:
            raise DeadLetter(f"run {task.run_id}: its context would be {size} bytes after "
                             f"{self.ref!r}, over the limit of {self.workflow.context_limit}; "
                             "pass large data by reference (e.g. an object-store key)")
        return ctx

    def leads_to_end(self, ctx: Mapping[str, Any]) -> bool:
        """Whether the case just chosen ends the run."""
        if self.route is None:
            return False
        try:
            return self.route.target(ctx) == END
        except RoutingError:
            return False

    def case(self, task: Task, ctx: dict[str, Any]) -> str | None:
        """The case the switch after this step takes (its own record goes in the context)."""
        spec = self.switch
        assert spec is not None
        inputs = resolve(spec.inputs or {}, document(self, ctx, task), task.id)
        if spec.loop is not None:
            goes_round = spec.loop.enters(ctx) if spec.evaluator == "loop-start" else \
                spec.loop.again(task, inputs, ctx)
            return "true" if goes_round else None
        if spec.evaluator == "value-param":
            value = inputs.get(spec.expression) if isinstance(inputs, Mapping) else None
        else:
            value = run_javascript(spec.expression, inputs)
        chosen = None if value is None else _case_text(value)
        ctx["tasks"][spec.ref] = {"taskType": "SWITCH", "status": COMPLETED, "input": inputs,
                                  "output": {"evaluationResult": [chosen]},
                                  "referenceTaskName": spec.ref}
        return chosen

    def complete(self, task: Task, ctx: dict[str, Any]) -> None:
        """Fill in the workflow's output and status (a TERMINATE task already did)."""
        workflow = ctx["workflow"]
        if workflow.get("status", RUNNING) != RUNNING:
            return
        if self.workflow.output_parameters:
            workflow["output"] = resolve(dict(self.workflow.output_parameters),
                                         document(self, ctx, task), task.id)
        else:  # Conductor: the output of the last task that ran
            workflow["output"] = ctx["tasks"].get(ctx.get(LAST), {}).get("output", {})
        failed = workflow.get("permissiveFailure")
        workflow["status"] = FAILED if failed else COMPLETED
        if failed:
            workflow["reasonForIncompletion"] = f"permissive task {failed!r} failed"


def _case_text(value: Any) -> str:
    """Case values compare as text, as Conductor's do (true -> 'true', 2 -> '2')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def context_of(task: Task) -> dict[str, Any]:
    """A copy of the run's context from a task's payload."""
    return context_of_payload(task.payload, Workflow(""))


def context_of_payload(payload: Any, workflow: Workflow) -> dict[str, Any]:
    """The context in a payload; a payload that is not one is taken as the workflow input
    (a run started with ``streamtask send`` to the first stage)."""
    if isinstance(payload, Mapping) and isinstance(payload.get("workflow"), Mapping) and \
            isinstance(payload.get("tasks"), Mapping):
        return copy.deepcopy(dict(payload))
    given = payload if isinstance(payload, Mapping) else {"input": payload}
    return workflow.new_context(given)


def document(step: Step, ctx: Mapping[str, Any], task: Task) -> dict[str, Any]:
    """What expressions see: ``workflow`` (with its id, type and version) and every task."""
    workflow = {"output": {}, **ctx["workflow"], "workflowId": task.run_id,
                "workflowType": step.workflow.name, "version": step.workflow.version,
                "schemaVersion": 2}
    return {**ctx["tasks"], "workflow": workflow}


@dataclass(frozen=True)
class RunResult:
    """A finished run, as read from its final context."""

    workflow_id: str
    status: str
    output: Any
    variables: Mapping[str, Any]
    tasks: Mapping[str, Any]
    reason: str | None = None


def run_result(task: Task) -> RunResult:
    """The finished run a task of the :data:`END` stage carries."""
    ctx = context_of(task)
    workflow = ctx["workflow"]
    return RunResult(task.run_id, workflow.get("status", COMPLETED), workflow.get("output"),
                     workflow.get("variables") or {}, ctx["tasks"],
                     workflow.get("reasonForIncompletion"))
