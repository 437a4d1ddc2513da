"""The workflow compiler: a Conductor definition's task lists turned into stage declarations.

A definition's ``tasks`` run in sequence; each becomes one or more stages whose ``then=``
leads to the next task's first stage, and the last sends the run to the stage ``_end``.
A sequence is compiled from its end, so each task knows what follows it. What maps, and
how (the README's workflow section lists every option):

* ``SIMPLE`` (or no ``type``): a stage named by the task's ``name`` (by its reference name
  when tasks share a name), run by ``handlers[name]``; retries and timeouts come from its
  task definition (:mod:`streamtask.conductor.taskdefs`).
* ``FORK_JOIN`` + ``JOIN``: the stage before it forks to every branch; each branch's last
  stage sends to the join (the ``JOIN`` that follows, or an implicit ``<fork name>_join``).
* ``SWITCH`` / ``DECISION``: routing, not a stage: the stage in front of the switch picks
  the case (value-param or JavaScript) after its own task.
* ``DO_WHILE`` (:mod:`streamtask.conductor.loops`), ``WAIT`` / ``HUMAN`` and
  ``asyncComplete`` tasks (:mod:`streamtask.conductor.waits`), ``SUB_WORKFLOW``, by name or
  by an expression naming one of several candidates
  (:mod:`streamtask.conductor.subworkflows`), ``FORK_JOIN_DYNAMIC``
  (:mod:`streamtask.conductor.dynamic`), ``EVENT`` (:mod:`streamtask.conductor.sinks`) and
  the system tasks of :mod:`streamtask.conductor.systemtasks`.
* a task's ``startDelay``: a ``<task>_delay`` stage in front of it, and a WAIT ``until`` a
  time or for a ``duration`` given by an expression (:mod:`streamtask.conductor.timers`).

Where a fork or switch has no stage in front of it (the first task of the workflow, of a
branch or of a case), a routing stage named after that task passes the context on.

Nothing is silently dropped: unsupported task types (nested ones included), unknown options
and missing handlers are all collected as problems, which the loader raises as one error.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamtask.conductor import (
    dynamic,
    failures,
    sinks,
    starts,
    subworkflows,
    systemtasks,
    timers,
)
from streamtask.conductor.context import CASE, END, ROUTE, Body, Step, SwitchSpec, Workflow
from streamtask.conductor.definitions import (
    DECISION,
    DO_WHILE,
    DYNAMIC,
    EVENT,
    EXCLUSIVE_JOIN,
    FORK_JOIN,
    HTTP,
    HUMAN,
    INLINE,
    JOIN,
    JSON_JQ,
    LAMBDA,
    MAX_NESTING,
    SET_VARIABLE,
    SIMPLE,
    START_WORKFLOW,
    SUB_WORKFLOW,
    SWITCH,
    TERMINATE,
    WAIT,
    Where,
    decides,
    is_join,
    mapping_of,
    nested_lists,
    nesting,
    ref_name,
    shared_names,
    strings_in,
    task_label,
    task_ref,
    tasks_of,
    type_of,
    walk,
    with_names,
    workflow_problems,
)
from streamtask.conductor.expressions import problems as expression_problems
from streamtask.conductor.failures import FAILURE
from streamtask.conductor.loops import DEFAULT_MAX_ITERATIONS, Loop
from streamtask.conductor.scripts import missing_extra
from streamtask.conductor.stages import SIGNAL, TIMER, CaseSwitch, Decl, Part
from streamtask.conductor.taskdefs import (
    CONDUCTOR_DEFAULTS,
    SYSTEM_DEFAULTS,
    TASK_LEVEL,
    settings,
    unsupported_options,
)
from streamtask.conductor.timers import TIMER_POLICY, parse_until
from streamtask.conductor.waits import (
    DEFAULT_DEADLINE,
    completion,
    parse_duration,
    resume,
    timed_park,
    timed_signals,
)
from streamtask.errors import ConfigurationError
from streamtask.model.app import App, Handler
from streamtask.model.pipeline import Switch
from streamtask.retry import NO_RETRIES

if TYPE_CHECKING:
    from streamtask.conductor.starts import Loader

MAX_SUB_WORKFLOW_DEPTH = 8
"""How deep sub-workflows may nest."""
_DESCRIPTIVE = {"name", "taskReferenceName", "type", "description", "startDelay"}
_TASK = {"inputParameters", "taskDefinition", *TASK_LEVEL, "optional", "permissive",
         "asyncComplete"}
_OPTIONS: dict[str, set[str]] = {
    SIMPLE: _TASK, HTTP: _TASK, INLINE: _TASK, JSON_JQ: _TASK, SET_VARIABLE: _TASK,
    EVENT: _TASK | {"sink"},
    LAMBDA: _TASK | {"scriptExpression"},
    TERMINATE: {"inputParameters"},
    START_WORKFLOW: {"inputParameters", "optional"},
    WAIT: {"inputParameters", "taskDefinition", "optional"},
    HUMAN: {"inputParameters", "taskDefinition", "optional"},
    SUB_WORKFLOW: {"inputParameters", "subWorkflowParam", "optional", "permissive",
                   "retryCount"},
    EXCLUSIVE_JOIN: {"joinOn", "defaultExclusiveJoinTask", "inputParameters"},
    FORK_JOIN: {"forkTasks", "inputParameters", "retryCount"},
    DYNAMIC: {"dynamicForkTasksParam", "dynamicForkTasksInputParamName", "inputParameters",
              "taskDefinition", "retryCount", "optional", "permissive"},
    DO_WHILE: {"loopCondition", "loopOver", "items", "evaluatorType", "inputParameters",
               "retryCount"},
    JOIN: {"joinOn", "timeoutSeconds", "inputParameters", "joinMode", "retryCount"},
    SWITCH: {"evaluatorType", "expression", "inputParameters", "decisionCases", "defaultCase",
             "retryCount", "caseValueParam", "caseExpression"},
    DECISION: {"caseValueParam", "caseExpression", "inputParameters", "decisionCases",
               "defaultCase", "retryCount"},
}
_BODIES: dict[str, Body] = {
    SET_VARIABLE: systemtasks.set_variable, TERMINATE: systemtasks.terminate,
    INLINE: systemtasks.inline, JSON_JQ: systemtasks.json_jq_transform,
    HTTP: systemtasks.http}
_SYSTEM = {HTTP, INLINE, JSON_JQ, SET_VARIABLE, LAMBDA, TERMINATE, EXCLUSIVE_JOIN, DYNAMIC,
           START_WORKFLOW, EVENT}
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")  # as streamtask.model.app requires
_JAVASCRIPT = ("javascript", "graaljs")




class Compiler:
    """Turns task lists into stage declarations, collecting every problem on the way.

    A sequence is compiled from its end, so each task knows what follows it.
    """

    def __init__(self, workflow: Workflow, defaults: dict[str, Any],
                 task_defs: dict[str, dict[str, Any]], ignore: set[str],
                 raw: Mapping[str, Any]) -> None:
        self.workflow = workflow
        self.defaults = defaults
        self.task_defs = task_defs
        self.ignore = ignore
        self.problems: list[tuple[Where, str]] = []
        self.unsupported: list[tuple[Where, str]] = []
        self.decls: dict[str, Decl] = {}
        self.switches: dict[str, SwitchSpec] = {}
        self.max_iterations = DEFAULT_MAX_ITERATIONS
        self.signals: dict[str, str] = {}
        self.fork_depth = 0
        self.prefix, self.end = "", END
        self.sub_workflows: dict[str, dict[str, Any]] = {}
        self.loader: Loader | None = None
        """Loads a workflow a START_WORKFLOW starts runs of, as its own app."""
        self.dynamic: dict[str, str] = {}
        """The JOIN reference of each FORK_JOIN_DYNAMIC, by its reference."""
        self.within: tuple[str, ...] = (str(raw.get("name")),)
        self.shared_names = shared_names(tasks_of(raw))
        given = [t.get("taskReferenceName") for t in walk(tasks_of(raw))]
        for ref in given:
            if not isinstance(ref, str | None):
                self.note((), f"taskReferenceName {ref!r} must be text")
        for ref, count in Counter(r for r in given if isinstance(r, str)).items():
            if count > 1:
                self.note((), f"taskReferenceName {ref!r} is used {count} times; each task "
                          "needs its own (expressions find tasks by it)")

    def note(self, at: Where, problem: str) -> None:
        self.problems.append((at, problem))

    def compile(self, tasks: list[Any]) -> str:
        """Compile the workflow; returns the stage its runs start at."""
        start = self.sequence(tasks, Part(END, END), ())
        return self.stage_of(start, "the workflow's start")

    def report(self, handlers: Mapping[str, Handler]) -> list[str]:
        """Every problem: unsupported tasks first, then the rest, then missing handlers."""
        found = list(dict.fromkeys(  # a problem two checks see is said once
            problem for _, problem in sorted(self.problems, key=lambda p: p[0])))
        if self.unsupported:
            listed = ", ".join(text for _, text in sorted(self.unsupported))
            found.insert(0, f"unsupported task type(s): {listed}")
        missing = list(dict.fromkeys(
            d.task_name for d in sorted(self.decls.values(), key=lambda d: d.position)
            if d.kind == SIMPLE and d.task_name not in handlers))
        if missing:
            found.append(f"no handler for task(s) {', '.join(missing)} (give handlers keyed "
                         "by task name)")
        return found

    def stage_name(self, task: Mapping[str, Any]) -> str:
        """A task's stage: its name, or its reference name when tasks share the name
        (prefixed by the SUB_WORKFLOW's stage inside a sub-workflow)."""
        name = str(task["name"])
        ref = task.get("taskReferenceName")
        name = str(ref) if name in self.shared_names and isinstance(ref, str) else name
        return self.prefix + name

    def sequence(self, tasks: list[Any], after: Part, path: Where) -> Part:
        """Compile tasks that run one after the other, ending in ``after``."""
        units: list[tuple[Where, Mapping[str, Any], Mapping[str, Any] | None]] = []
        for index, task in enumerate(tasks):
            before = tasks[index - 1] if index else None
            if not isinstance(task, Mapping) or not isinstance(task.get("name"), str):
                self.note((*path, index), f"task {str(task)[:60]!r} is not an object with a "
                          "name")
            elif type_of(task) != JOIN:
                following = tasks[index + 1] if index + 1 < len(tasks) else None
                join = following if type_of(task) in (FORK_JOIN, DYNAMIC) and \
                    is_join(following) else None
                units.append(((*path, index), task, join))
            elif not (isinstance(before, Mapping) and type_of(before) in (FORK_JOIN, DYNAMIC)):
                self.note((*path, index), f"JOIN {task_label(task)} does not follow a FORK_JOIN")
        end = after.last
        for number, (at, task, join) in enumerate(reversed(units)):
            after = self.unit(task, join, after, at)
            end = after.last if number == 0 else end
        return replace(after, last=end)

    def unit(self, task: Mapping[str, Any], join: Mapping[str, Any] | None, after: Part,
             at: Where) -> Part:
        kind = type_of(task)
        if kind not in _OPTIONS:
            self.unsupported.append((at, f"{task_label(task)} ({kind})"))
            for number, inner in enumerate(nested_lists(task)):
                self.sequence(inner, after, (*at, number))  # report what is inside too
            return after
        self.check_options(task, kind, at)
        part = self.unit_of(task, kind, join, after, at)
        delay = self.start_delay(task, at)
        return self.delayed(task, part, delay, at) if delay else part

    def unit_of(self, task: Mapping[str, Any], kind: str, join: Mapping[str, Any] | None,
                after: Part, at: Where) -> Part:
        """The stages of one (supported) task, by its type."""
        if kind == FORK_JOIN:
            return self.fork(task, join, after, at)
        if kind in (SWITCH, DECISION):
            return self.switch(task, after, at)
        if kind == DO_WHILE:
            return self.loop(task, after, at)
        if kind in (WAIT, HUMAN):
            return self.wait(task, kind, after, at)
        if kind == SUB_WORKFLOW:
            return self.sub_workflow(task, after, at)
        if kind == DYNAMIC:
            self.dynamic[ref_name(task)] = ref_name(join) if join else \
                f"{ref_name(task)}_join"
        return self.task(task, kind, after, at)

    def start_delay(self, task: Mapping[str, Any], at: Where) -> float:
        """A task's ``startDelay`` in seconds (0: none)."""
        value = task.get("startDelay") or 0
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.note(at, f"{task_label(task)}: startDelay must be a number of seconds >= 0, "
                      f"not {value!r}")
            return 0.0
        return float(value)

    def delayed(self, task: Mapping[str, Any], part: Part, seconds: float, at: Where) -> Part:
        """``part`` behind a stage ``<task>_delay`` that holds each run ``seconds`` first
        (see :mod:`streamtask.conductor.timers`)."""
        entry = self.stage_of(part, f"the start of {task_label(task)}")
        name = f"{self.stage_name(task)}_delay"
        self.add(Decl(name, TIMER, at, task_ref(task),
                      Step(self.workflow, f"{ref_name(task)}_delay", ROUTE), entry,
                      retry=TIMER_POLICY, timeout=None,
                      handler=timers.start_delay(name, seconds)))
        return replace(part, entry=name)

    def sub_workflow(self, task: Mapping[str, Any], after: Part, at: Where) -> Part:
        """A SUB_WORKFLOW: the child's tasks in a frame (see
        :mod:`streamtask.conductor.subworkflows`); a child named by an expression is one of
        the candidates :meth:`sub_workflow_by_name` compiles."""
        param = task.get("subWorkflowParam")
        param = param if isinstance(param, Mapping) else {}
        named = param.get("name")
        if isinstance(named, str) and "${" in named and \
                not isinstance(param.get("workflowDefinition"), Mapping):
            return self.sub_workflow_by_name(task, named, after, at)
        raw = self.child_definition(task, at)
        if raw is None:
            return after
        name = self.stage_name(task)
        leave = after.entry if isinstance(after.entry, str) else \
            self.stage_of(after, f"the task after {task_label(task)}")
        self.child_stages(task, raw, name, leave, at)
        return Part(name, f"{name}_done", task, at)

    def child_stages(self, task: Mapping[str, Any], raw: Mapping[str, Any], name: str,
                     leave: str, at: Where, chosen: str | None = None) -> None:
        """The stages of one child: ``name`` opens its frame, its tasks run as
        ``<name>__<task>``, ``<name>_done`` closes the frame and goes on to ``leave``.
        ``chosen`` is the record of the choice among candidates, dropped on entering."""
        label, ref = task_label(task), ref_name(task)
        child = Workflow(str(raw["name"]), raw.get("version"), mapping_of(raw, "outputParameters"),
                         mapping_of(raw, "inputTemplate"), mapping_of(raw, "variables"),
                         self.workflow.context_limit)
        self.problems.extend((at, f"SUB_WORKFLOW {label}: {p}")
                             for p in workflow_problems(raw, self.ignore, child=True))
        if raw.get("failureWorkflow"):
            self.note(at, f"SUB_WORKFLOW {label}: the failureWorkflow of a sub-workflow is not "
                      "supported")
        done = f"{name}_done"
        saved = (self.workflow, self.prefix, self.end, self.shared_names, self.within)
        self.workflow, self.prefix, self.end = child, f"{name}__", done
        self.shared_names, self.within = shared_names(raw["tasks"]), (*self.within, child.name)
        try:
            enter = self.stage_of(self.sequence(raw["tasks"], Part(done, done, task, (*at, 1)),
                                                (*at, 0)), f"the start of {label}")
        finally:
            (self.workflow, self.prefix, self.end, self.shared_names, self.within) = saved
        tolerate = "optional" if task.get("optional") else \
            "permissive" if task.get("permissive") else None
        self.add(Decl(name, ROUTE, at, task_ref(task),
                      Step(self.workflow, ref, ROUTE, task.get("inputParameters") or {}),
                      enter, body=subworkflows.enter(ref, child, chosen)))
        self.add(Decl(done, ROUTE, (*at, 2), task_ref(task),
                      Step(self.workflow, ref, ROUTE, tolerate=tolerate, retry=NO_RETRIES),
                      leave, body=subworkflows.leave(ref, child)))

    def sub_workflow_by_name(self, task: Mapping[str, Any], expression: str, after: Part,
                             at: Where) -> Part:
        """A SUB_WORKFLOW whose child is named by an expression: every workflow given to the
        loader that can run there (compiles cleanly, and does not contain this workflow) is
        compiled in as a candidate ``<task>-<n>``; the stage ``<task>`` resolves the name and
        picks one, and every candidate ends at ``<task>_done``. A name no candidate has
        dead-letters the run at ``<task>_unknown``, saying which names it knows."""
        label, ref, name = task_label(task), ref_name(task), self.stage_name(task)
        leave = after.entry if isinstance(after.entry, str) else \
            self.stage_of(after, f"the task after {label}")
        done, unknown, chosen = f"{name}_done", f"{name}_unknown", f"{ref}_name"
        targets: dict[Any, str] = {}
        for number, (child, raw) in enumerate(sorted(self.sub_workflows.items())):
            if child in self.within or len(self.within) > MAX_SUB_WORKFLOW_DEPTH or \
                    not isinstance(raw.get("tasks"), list) or not raw["tasks"] or \
                    nesting(raw["tasks"]) > MAX_NESTING:
                continue
            stage, where = f"{name}-{number}", (*at, 3 + number)
            if self.compiles(functools.partial(self.child_stages, task,
                                               with_names({**raw, "name": child}), stage, done,
                                               where, chosen)):
                targets[child] = stage
        if not targets:
            self.note(at, f"SUB_WORKFLOW {label}: its name is given by {expression!r}, and no "
                      "workflow given to the loader (sub_workflows=[...], or --sub-workflow "
                      "FILE) can run there")
            return after
        self.switches[chosen] = SwitchSpec(chosen, "value-param", "name", {"name": expression})
        self.add(Decl(name, ROUTE, at, task_ref(task), Step(self.workflow, ref, ROUTE),
                      CaseSwitch(CASE, targets, unknown, ref=chosen), body=_route))
        self.add(Decl(unknown, ROUTE, (*at, 1), task_ref(task), Step(self.workflow, ref, ROUTE),
                      done, body=subworkflows.unknown(ref, expression, chosen, tuple(targets))))
        self.add(Decl(done, ROUTE, (*at, 2), task_ref(task),
                      Step(self.workflow, f"{ref}_done", ROUTE), leave, body=_route))
        return Part(name, done, task, at)

    def failure_workflow(self, name: Any) -> None:
        """Compile the ``failureWorkflow`` (see :mod:`streamtask.conductor.failures`)."""
        at: Where = (1_000_000,)
        key = failures.input_key(name)
        if key is not None:
            self.failure_by_input(key, at)
            return
        raw = self.sub_workflows.get(str(name))
        if not isinstance(name, str) or "$" in name:
            self.note(at, f"failureWorkflow {name!r}: a name given by an expression must be "
                      "$workflow.input.<key> or ${workflow.input.<key>}")
            return
        if raw is None or not isinstance(raw.get("tasks"), list) or not raw["tasks"]:
            self.note(at, f"failureWorkflow {name!r} is not given to the loader "
                      "(sub_workflows=[...], or --sub-workflow FILE)")
            return
        self.failure_candidate(name, raw, FAILURE, at)

    def failure_candidate(self, name: str, raw: Mapping[str, Any], stage: str,
                          at: Where) -> None:
        """The stages of one failure workflow: ``stage``, its tasks, ``<stage>_done``."""
        raw = with_names({**raw, "name": name})
        child = Workflow(name, raw.get("version"), mapping_of(raw, "outputParameters"),
                         mapping_of(raw, "inputTemplate"), mapping_of(raw, "variables"),
                         self.workflow.context_limit)
        done = f"{stage}_done"
        saved = (self.workflow, self.prefix, self.end, self.shared_names)
        self.workflow, self.prefix, self.end = child, f"{stage}__", done
        self.shared_names = shared_names(raw["tasks"])
        try:
            enter = self.stage_of(self.sequence(raw["tasks"], Part(done, done, None, at),
                                                (*at, 0)), "the failure workflow's start")
        finally:
            self.workflow, self.prefix, self.end, self.shared_names = saved
        self.add(Decl(stage, ROUTE, at, f"failureWorkflow {name!r}",
                       Step(self.workflow, stage, ROUTE), enter, body=failures.start(child)))
        self.add(Decl(done, ROUTE, (*at, 1), f"failureWorkflow {name!r}",
                       Step(self.workflow, done, ROUTE), END, body=failures.finish(child)))

    def failure_by_input(self, key: str, at: Where) -> None:
        """A failureWorkflow named by the run's input: every definition given to the loader
        that compiles cleanly is a candidate, chosen by name when a run fails."""
        targets: dict[Any, str] = {}
        for number, (name, raw) in enumerate(sorted(self.sub_workflows.items())):
            if name in self.within or not isinstance(raw.get("tasks"), list) or \
                    not raw["tasks"]:
                continue
            stage = f"{FAILURE}{number}"
            if self.compiles(functools.partial(self.failure_candidate, name, raw, stage,
                                               (*at, number))):
                targets[name] = stage
        none = f"{FAILURE}_none"
        self.switches[FAILURE] = SwitchSpec(FAILURE, "value-param", "name",
                                            {"name": f"${{workflow.input.{key}}}"})
        self.add(Decl(FAILURE, ROUTE, at, f"failureWorkflow from workflow.input.{key}",
                       Step(self.workflow, FAILURE, ROUTE),
                       CaseSwitch(CASE, targets, none, ref=FAILURE), body=failures.choose))
        self.add(Decl(none, ROUTE, (*at, -1), f"failureWorkflow from workflow.input.{key}",
                       Step(self.workflow, none, ROUTE), END,
                       body=failures.unknown(key, tuple(targets))))

    def compiles(self, build: Callable[[], None]) -> bool:
        """Run ``build``; when it finds a problem, undo everything it declared."""
        saved = (len(self.problems), len(self.unsupported), dict(self.decls),
                 dict(self.switches), dict(self.signals), dict(self.dynamic))
        build()
        if len(self.problems) == saved[0] and len(self.unsupported) == saved[1]:
            return True
        del self.problems[saved[0]:], self.unsupported[saved[1]:]
        self.decls, self.switches, self.signals, self.dynamic = (
            saved[2], saved[3], saved[4], saved[5])
        return False

    def child_definition(self, task: Mapping[str, Any], at: Where) -> dict[str, Any] | None:
        """The child workflow a SUB_WORKFLOW runs: inline, or given by name to the loader."""
        label, param = task_label(task), task.get("subWorkflowParam")
        param = param if isinstance(param, Mapping) else {}
        inline, name = param.get("workflowDefinition"), param.get("name")
        raw = dict(inline) if isinstance(inline, Mapping) else self.sub_workflows.get(str(name))
        problem = None
        if not isinstance(name, str) or "${" in name:
            problem = f"subWorkflowParam.name must be a workflow's name, not {name!r}"
        elif raw is None:
            problem = (f"sub-workflow {name!r} is neither inline (workflowDefinition) nor "
                       "given to the loader (sub_workflows=[...], or --sub-workflow FILE)")
        elif name in self.within or len(self.within) > MAX_SUB_WORKFLOW_DEPTH:
            problem = f"sub-workflow {name!r} would contain itself"
        elif not isinstance(raw.get("tasks"), list) or not raw["tasks"]:
            problem = f"sub-workflow {name!r} has no tasks"
        elif nesting(raw["tasks"]) > MAX_NESTING:
            problem = f"sub-workflow {name!r} nests tasks over {MAX_NESTING} levels deep"
        if problem is not None:
            self.note(at, f"SUB_WORKFLOW {label}: {problem}")
            return None
        assert raw is not None
        return with_names({**raw, "name": name})

    def wait(self, task: Mapping[str, Any], kind: str, after: Part, at: Where) -> Part:
        """A WAIT or HUMAN task: park, signal and resume stages (see
        :mod:`streamtask.conductor.waits`)."""
        name, ref, label = self.stage_name(task), ref_name(task), task_label(task)
        inputs = task.get("inputParameters") or {}
        if self.fork_depth:
            self.note(at, f"{kind} {label}: a waiting task inside a FORK_JOIN branch is not "
                      "supported (signals are keyed by run)")
        timed = kind == WAIT and self.timed(task, inputs, at)
        duration = None if timed else self.duration(task, kind, inputs, at)
        deadline = duration or self.deadline(task)
        then = after.entry
        if not isinstance(then, str):
            then = self.stage_of(after, f"the task after {label}")
        resume_stage, signal = f"{name}_resume", f"{name}_signal"
        self.signals[ref] = signal
        park = Step(self.workflow, ref, ROUTE, inputs if timed else None)
        self.add(Decl(name, ROUTE, at, task_ref(task), park, resume_stage, body=_route,
                      handler=timed_park(park, resume_stage, signal, deadline) if timed
                      else None))
        self.add(Decl(signal, SIGNAL, at, task_ref(task), Step(self.workflow, ref, ROUTE),
                      resume_stage, retry=TIMER_POLICY if timed else None,
                      handler=timed_signals(signal) if timed else None))
        step = Step(self.workflow, ref, kind, inputs, waits=(name, signal),
                    tolerate="optional" if task.get("optional") else None, retry=NO_RETRIES)
        self.add(Decl(resume_stage, JOIN, (*at, 1), task_ref(task), step, then,
                       timeout=deadline, branches=(name, signal),
                       body=resume(ref, duration is not None),
                       on_timeout="partial" if duration is not None else "dead-letter"))
        return Part(name, resume_stage, task, at)

    def duration(self, task: Mapping[str, Any], kind: str, inputs: Any,
                 at: Where) -> float | None:
        """A WAIT's literal ``duration`` in seconds (None: it waits for a signal)."""
        if kind != WAIT or not isinstance(inputs, Mapping):
            return None
        value = inputs.get("duration")
        if value is None:
            return None
        try:
            if not isinstance(value, str):
                raise ConfigurationError(f"duration must be text like '2d 3h', not {value!r}")
            return parse_duration(value) or None
        except ConfigurationError as exc:
            self.note(at, f"WAIT {task_label(task)}: {exc}")
            return None

    def timed(self, task: Mapping[str, Any], inputs: Any, at: Where) -> bool:
        """Whether a WAIT is timed when the run reaches it (``until``, or a ``duration``
        given by an expression); literal values are checked now."""
        if not isinstance(inputs, Mapping):
            return False
        until, duration = inputs.get("until"), inputs.get("duration")
        if until is not None and duration is not None:
            self.note(at, f"WAIT {task_label(task)}: give one of until or duration, not both")
            return False
        if until is None:
            return isinstance(duration, str) and "${" in duration
        try:
            if not isinstance(until, str):
                raise ConfigurationError(f"until must be text like '2026-12-24 18:00', not "
                                         f"{until!r}")
            if "${" not in until:
                parse_until(until)
        except ConfigurationError as exc:
            self.note(at, f"WAIT {task_label(task)}: {exc}")
            return False
        return True

    def deadline(self, task: Mapping[str, Any]) -> float:
        """How long a task waits for its signal: its task definition's timeout, else
        :data:`~streamtask.conductor.waits.DEFAULT_DEADLINE`."""
        definition = {**self.task_defs.get(str(task["name"]), {}),
                      **(task.get("taskDefinition") or {})}
        given = [definition.get(k) for k in ("timeoutSeconds", "responseTimeoutSeconds")]
        numbers = [float(v) for v in given if isinstance(v, int | float) and v > 0]
        return min(numbers) if numbers else DEFAULT_DEADLINE

    def loop(self, task: Mapping[str, Any], after: Part, at: Where) -> Part:
        """A DO_WHILE: a start stage, the body, and a check stage that goes round again or
        on (see :mod:`streamtask.conductor.loops`)."""
        name, ref, label = self.stage_name(task), ref_name(task), task_label(task)
        body, condition = task.get("loopOver"), task.get("loopCondition")
        if not isinstance(body, list) or not body:
            self.note(at, f"DO_WHILE {label}: loopOver must be a non-empty list of tasks")
            return after
        if not (isinstance(condition, str) and condition) and task.get("items") is None:
            self.note(at, f"DO_WHILE {label}: needs a loopCondition (JavaScript) or items")
        elif isinstance(condition, str) and condition:
            self.need("js", at, f"DO_WHILE {label}")
        if task.get("evaluatorType") not in (None, *_JAVASCRIPT):
            self.note(at, f"DO_WHILE {label}: evaluatorType {task.get('evaluatorType')!r} is "
                      "not supported; use javascript or graaljs")
        loop = Loop(ref, condition or None, task.get("items"),
                    tuple(ref_name(t) for t in walk(body)), self.max_iterations)
        check = f"{name}_loop"
        leave = after.entry if isinstance(after.entry, str) else \
            self.stage_of(after, f"the task after {label}")
        enter = self.stage_of(self.sequence(body, Part(check, check, task, (*at, 1)),
                                            (*at, 0)), f"the loop body of {label}")
        inputs = task.get("inputParameters") or {}
        self.switches[f"{ref}#start"] = SwitchSpec(ref, "loop-start", "", {}, loop)
        self.switches[f"{ref}#loop"] = SwitchSpec(ref, "loop", "", inputs, loop)
        self.add(Decl(name, DO_WHILE, at, task_ref(task),
                      Step(self.workflow, ref, DO_WHILE, inputs),
                      CaseSwitch(CASE, {"true": enter}, leave, ref=f"{ref}#start"),
                       body=loop.start))
        self.add(Decl(check, ROUTE, (*at, 2), task_ref(task),
                       Step(self.workflow, f"{ref}_loop", ROUTE),
                       CaseSwitch(CASE, {"true": enter}, leave, ref=f"{ref}#loop"), body=_route))
        return Part(name, check, task, at)

    def task(self, task: Mapping[str, Any], kind: str, after: Part, at: Where) -> Part:
        """A SIMPLE or system task: one stage running its step."""
        name = self.stage_name(task)
        options = self.task_settings(task, kind, at)
        tolerate = "optional" if task.get("optional") else \
            "permissive" if task.get("permissive") else None
        if kind == TERMINATE:
            self.check_terminate(task, tolerate, at)
        if kind == TERMINATE and self.fork_depth:
            self.note(at, f"TERMINATE {task_label(task)} inside a FORK_JOIN branch is not "
                      "supported (the other branches would not be cancelled)")
        step = Step(self.workflow, ref_name(task), kind, task.get("inputParameters") or {},
                    options.input_template, tolerate=tolerate, retry=options.retry)
        then = self.end if kind == TERMINATE else after.entry
        last = name
        if task.get("asyncComplete") is True:
            then = last = self.async_completion(task, kind, name, after, at)
        make_body = None
        if kind == DYNAMIC:
            make_body = functools.partial(
                dynamic.forked, task.get("dynamicForkTasksParam"),
                task.get("dynamicForkTasksInputParamName"), self.dynamic[ref_name(task)])
        self.add(Decl(name, SIMPLE if kind == SIMPLE else kind, at, task_ref(task), step, then,
                       options.retry, options.timeout, concurrency=options.concurrency,
                       task_name=str(task["name"]), body=self.body(task, kind, at),
                       make_body=make_body, rate_limit=options.rate_limit,
                       make_app_body=self.sink(task, at) if kind == EVENT else None))
        return Part(name, last, task, at)

    def async_completion(self, task: Mapping[str, Any], kind: str, name: str, after: Part,
                         at: Where) -> str:
        """``asyncComplete``: the task's stage parks the run at a resume join, as a WAIT
        does, until a signal completes it (:meth:`WorkflowApp.signal`, ``streamtask
        signal``); its output is the task's merged with the signal's, as Conductor merges an
        external update. Returns the resume join, where the run goes on."""
        ref, label = ref_name(task), task_label(task)
        if kind in (TERMINATE, DYNAMIC, EXCLUSIVE_JOIN):
            self.note(at, f"{kind} {label} cannot be asyncComplete")
        if self.fork_depth:
            self.note(at, f"{kind} {label}: an asyncComplete task inside a FORK_JOIN branch is "
                      "not supported (signals are keyed by run)")
        then = after.entry if isinstance(after.entry, str) else \
            self.stage_of(after, f"the task after {label}")
        resume_stage, signal = f"{name}_resume", f"{name}_signal"
        self.signals[ref] = signal
        self.add(Decl(signal, SIGNAL, at, task_ref(task), Step(self.workflow, ref, ROUTE),
                      resume_stage))
        step = Step(self.workflow, ref, kind, task.get("inputParameters") or {},
                    waits=(name, signal), retry=NO_RETRIES,
                    tolerate="optional" if task.get("optional") else None)
        self.add(Decl(resume_stage, JOIN, (*at, 1), task_ref(task), step, then,
                      timeout=self.deadline(task), branches=(name, signal),
                      body=completion(ref)))
        return resume_stage

    def sink(self, task: Mapping[str, Any], at: Where) -> Callable[[App], Body]:
        """An EVENT's publisher (see :mod:`streamtask.conductor.sinks`); a literal sink that
        is not ``kafka:<topic>`` is reported now."""
        sink = task.get("sink")
        if not (isinstance(sink, str) and "${" in sink):
            try:
                sinks.topic_of(sink)
            except ConfigurationError as exc:
                self.note(at, f"EVENT {task_label(task)}: {exc}")
        return sinks.publisher(str(sink), self.workflow)

    def check_terminate(self, task: Mapping[str, Any], tolerate: str | None,
                        at: Where) -> None:
        """What Conductor checks when a TERMINATE is registered: a literal status that is
        one of its three, and not optional."""
        if tolerate:
            self.note(at, f"TERMINATE {task_label(task)} cannot be optional")
        inputs = task.get("inputParameters")
        status = inputs.get("terminationStatus") if isinstance(inputs, Mapping) else None
        if not (isinstance(status, str) and "${" in status) and \
                status not in systemtasks.TERMINATION_STATUSES:
            self.note(at, f"TERMINATE {task_label(task)}: terminationStatus {status!r} is not "
                      f"one of {', '.join(systemtasks.TERMINATION_STATUSES)}")

    def body(self, task: Mapping[str, Any], kind: str, at: Where) -> Body | None:
        """What a system task does (None for SIMPLE: the user's handler)."""
        inputs = task.get("inputParameters")
        inputs = inputs if isinstance(inputs, Mapping) else {}  # else reported already
        if kind == LAMBDA:
            return self.lambda_body(task, inputs, at)
        if kind == INLINE:
            evaluator = inputs.get("evaluatorType", "javascript")
            if evaluator not in (*_JAVASCRIPT, "value-param"):
                self.note(at, f"INLINE {task_label(task)}: evaluatorType {evaluator!r} is not "
                          "supported; use javascript, graaljs or value-param")
            elif evaluator != "value-param":
                self.need("js", at, f"INLINE {task_label(task)}")
        if kind == JSON_JQ:
            self.need("jq", at, f"JSON_JQ_TRANSFORM {task_label(task)}")
        if kind == DYNAMIC:
            return None  # needs the handlers: made when declared
        if kind == START_WORKFLOW:
            return self.starter(task, at)
        if kind == EXCLUSIVE_JOIN:
            return self.exclusive_join(task, at)
        return _BODIES.get(kind)

    def lambda_body(self, task: Mapping[str, Any], inputs: Any, at: Where) -> Body:
        """A LAMBDA's body: its ``scriptExpression`` (a task field, or an input)."""
        script = task.get("scriptExpression") or \
            (inputs.get("scriptExpression") if isinstance(inputs, Mapping) else None)
        if not isinstance(script, str):
            self.note(at, f"LAMBDA {task_label(task)} needs a scriptExpression")
        self.need("js", at, f"LAMBDA {task_label(task)}")
        return systemtasks.lambda_body(str(script))

    def exclusive_join(self, task: Mapping[str, Any], at: Where) -> Body:
        """An EXCLUSIVE_JOIN's body: the output of the first of its refs that ran."""
        if not isinstance(task.get("joinOn"), list | None):
            self.note(at, f"EXCLUSIVE_JOIN {task_label(task)}: joinOn must be a list of task "
                      "references")
        refs = [*strings_in(task.get("joinOn")),
                *strings_in(task.get("defaultExclusiveJoinTask"))]
        return systemtasks.exclusive_joiner(tuple(refs))

    def starter(self, task: Mapping[str, Any], at: Where) -> Body:
        """A START_WORKFLOW's body (see :mod:`streamtask.conductor.starts`); a literal name
        the loader was not given is reported now."""
        inputs = task.get("inputParameters")
        given = inputs.get("startWorkflow") if isinstance(inputs, Mapping) else None
        name = given.get("name") if isinstance(given, Mapping) else None
        if isinstance(name, str) and "${" not in name and name not in self.sub_workflows:
            self.note(at, f"START_WORKFLOW {task_label(task)}: workflow {name!r} is not given "
                      "to the loader (sub_workflows=[...], or --sub-workflow FILE)")
        assert self.loader is not None, "the loader sets Compiler.loader"
        return starts.starter(self.sub_workflows, self.loader)

    def need(self, extra: str, at: Where, what: str) -> None:
        missing = missing_extra(extra)
        if missing is not None:
            self.note(at, f"{what} needs the optional extra: pip install '{missing}'")

    def fork(self, task: Mapping[str, Any], join: Mapping[str, Any] | None, after: Part,
             at: Where) -> Part:
        branches = task.get("forkTasks")
        name = self.stage_name(join) if join is not None else f"{task['name']}_join"
        if not isinstance(branches, list) or len(branches) < 2 or \
                not all(isinstance(b, list) and b for b in branches):
            self.note(at, f"FORK_JOIN {task_label(task)}: forkTasks must list two or more "
                      "non-empty branches (each a list of tasks)")
            return after
        join_at = (*at, len(branches))
        entries, lasts, last_refs = [], [], []
        for number, branch in enumerate(branches):
            self.fork_depth += 1
            part = self.sequence(branch, self.branch_end(branch, name, join or task, join_at),
                                 (*at, number))
            self.fork_depth -= 1
            entries.append(self.stage_of(part, f"branch {number + 1} of {task_label(task)}"))
            if part.last is None:
                self.note(at, f"branch {number + 1} of FORK_JOIN {task_label(task)} must end "
                          "with a task that has a stage (not a SWITCH or TERMINATE)")
            elif part.last != name:  # else it ends in an unsupported task, reported already
                lasts.append(part.last)
                last_refs.append(self.decls[part.last].step.ref)
        timeout = 300.0
        if join is not None:
            self.check_options(join, JOIN, join_at)
            self.check_join_on(join, branches, join_at)
            timeout = _number(join, "timeoutSeconds", self.problems, join_at, task_label(join)) \
                or timeout
        then = after.entry
        if isinstance(then, Switch):  # a join cannot carry a switch: route via its stage
            then = self.stage_of(after, f"the task after {name!r}")
        join_on = tuple(join.get("joinOn") or last_refs) if join else tuple(last_refs)
        step = Step(self.workflow, ref_name(join) if join else name, JOIN, join_on=join_on)
        self.add(Decl(name, JOIN, join_at, task_ref(join or task), step, then, timeout=timeout,
                       branches=tuple(lasts), body=systemtasks.joiner(join_on)))
        return Part(tuple(entries), name, task, at)

    def branch_end(self, branch: list[Any], join: str, head: Mapping[str, Any],
                   at: Where) -> Part:
        """Where a fork branch's tasks go last: the join, or, when the branch ends in a
        switch, a routing stage ``<switch>_end`` that every case reaches (a join waits for
        one stage per branch)."""
        last = branch[-1] if branch else None
        if not (isinstance(last, Mapping) and type_of(last) in (SWITCH, DECISION)
                and isinstance(last.get("name"), str)):
            return Part(join, join, head, at)
        name = f"{self.stage_name(last)}_end"
        step = Step(self.workflow, f"{ref_name(last)}_end", ROUTE)
        self.add(Decl(name, ROUTE, at, task_ref(last), step, join, body=_route))
        return Part(name, name, last, at)

    def switch(self, task: Mapping[str, Any], after: Part, at: Where) -> Part:
        ref = ref_name(task)
        self.switches[ref] = self.switch_spec(task, at)
        cases = task.get("decisionCases") or {}
        if not isinstance(cases, Mapping) or not all(isinstance(c, list) for c in cases.values()):
            self.note(at, f"{task_label(task)}: decisionCases must map values to task lists")
            cases = {}
        targets: dict[Any, str] = {}
        for number, (value, tasks) in enumerate(cases.items()):
            if not tasks and decides(task):
                continue  # DECISION: a matched empty case falls back to the default
            part = self.sequence(tasks, after, (*at, number))
            targets[value] = self.stage_of(part, f"case {value!r} of {task_label(task)}")
        default_tasks = task.get("defaultCase") or []
        if not isinstance(default_tasks, list):
            self.note(at, f"{task_label(task)}: defaultCase must be a list of tasks")
            default_tasks = []
        default = None
        if default_tasks or after.entry is not None:  # Conductor: no match -> carry on
            part = self.sequence(default_tasks, after, (*at, len(cases)))
            default = self.stage_of(part, f"the default case of {task_label(task)}")
        # every case goes on to ``after``, so the switch's sequence ends where it ends
        return Part(CaseSwitch(CASE, targets, default, ref=ref), after.last, task, at)

    def switch_spec(self, task: Mapping[str, Any], at: Where) -> SwitchSpec:
        """How the case is chosen: an input parameter's value, or a JavaScript expression."""
        kind, inputs = type_of(task), task.get("inputParameters") or {}
        if decides(task):  # DECISION, or a SWITCH with its legacy semantics
            script = task.get("caseExpression")
            evaluator = "javascript" if script else "value-param"
            expression = script or task.get("caseValueParam") or task.get("expression")
        else:
            evaluator, expression = task.get("evaluatorType") or "value-param", \
                task.get("expression")
        if evaluator in _JAVASCRIPT:
            evaluator = "javascript"
            self.need("js", at, f"{kind} {task_label(task)}")
        elif evaluator != "value-param":
            self.note(at, f"{kind} {task_label(task)}: evaluatorType {evaluator!r} is not "
                      "supported; use value-param, javascript or graaljs")
        if not isinstance(expression, str) or not expression:
            self.note(at, f"{kind} {task_label(task)}: needs an expression (the input parameter "
                      "to switch on, or a script)")
            expression = ""
        if not isinstance(inputs, Mapping):
            self.note(at, f"{kind} {task_label(task)}: inputParameters must be an object")
            inputs = {}
        return SwitchSpec(ref_name(task), evaluator, expression, inputs)

    def stage_of(self, part: Part, where: str) -> str:
        """One stage that receives ``part``'s tasks, adding a routing stage if needed."""
        if isinstance(part.entry, str):
            return part.entry
        if part.entry is None or part.head is None:
            self.note(part.at, f"{where} is empty and nothing follows it: give it a task")
            return "?"
        name = self.stage_name(part.head)
        known = self.decls.get(name)
        if known is None or known.kind != ROUTE or known.then != part.entry:
            step = Step(self.workflow, ref_name(part.head), ROUTE)
            self.add(Decl(name, ROUTE, part.at, task_ref(part.head), step, part.entry,
                           body=_route))
        return name

    def add(self, decl: Decl) -> None:
        if not _STAGE_NAME.match(decl.name):
            self.note(decl.position, f"task name {decl.name!r} is not a valid stage name: use "
                      "1-100 letters, digits, '_' or '-'")
        known = self.decls.get(decl.name)
        if known is not None:
            self.note(decl.position, f"stage name {decl.name!r} is used by both {known.ref} "
                      f"and {decl.ref}; give each task its own name")
            return
        self.decls[decl.name] = decl

    def check_options(self, task: Mapping[str, Any], kind: str, at: Where) -> None:
        allowed = _DESCRIPTIVE | _OPTIONS[kind] | self.ignore
        unknown = sorted(key for key in task if key not in allowed and task[key] not in
                         (False, 0, None, "", [], {}))
        if unknown:
            self.note(at, f"{kind} {task_label(task)}: unsupported option(s) {', '.join(unknown)} "
                      "(pass ignore=[...] to accept losing them)")
        if "inputParameters" in task and not isinstance(task["inputParameters"], Mapping):
            self.note(at, f"{kind} {task_label(task)}: inputParameters must be an object")
        for flag in ("optional", "permissive", "asyncComplete"):
            if not isinstance(task.get(flag, False), bool):
                self.note(at, f"{kind} {task_label(task)}: {flag} must be true or false, not "
                          f"{task[flag]!r}")
        for problem in expression_problems(task.get("inputParameters")):
            self.note(at, f"{kind} {task_label(task)}: inputParameters: {problem}")

    def check_join_on(self, join: Mapping[str, Any], branches: list[list[Any]],
                      at: Where) -> None:
        """``joinOn`` must name tasks of the fork's branches. The join waits for every branch
        whatever it names (a branch may end in a switch), and outputs what it names."""
        if join.get("joinMode") not in (None, "SYNC", "ASYNC"):
            self.note(at, f"JOIN {task_label(join)}: joinMode {join.get('joinMode')!r} is not SYNC "
                      "or ASYNC")
        join_on = join.get("joinOn")
        if not join_on:
            return
        inside = {str(t.get("taskReferenceName")) for branch in branches for t in walk(branch)}
        if not isinstance(join_on, list) or not set(map(str, join_on)) <= inside:
            self.note(at, f"JOIN {task_label(join)}: joinOn {join_on!r} must name tasks of the "
                      "FORK_JOIN's branches")

    def task_settings(self, task: Mapping[str, Any], kind: str, at: Where) -> Any:
        """The task's merged task definition (see :mod:`streamtask.conductor.taskdefs`)."""
        where = f"{kind} {task_label(task)}"
        inline = task.get("taskDefinition") or {}
        if not isinstance(inline, Mapping):
            self.note(at, f"{where}: taskDefinition must be an object")
            inline = {}
        named = self.task_defs.get(str(task["name"]), {})
        for source, definition in (("taskDefinition", inline), ("taskDefs", named)):
            if unsupported := unsupported_options(definition):
                self.note(at, f"{where}: unsupported {source} option(s) "
                          f"{', '.join(unsupported)}")
        own = {k: v for k, v in task.items() if k in TASK_LEVEL and v is not None}
        base = SYSTEM_DEFAULTS if kind in _SYSTEM else CONDUCTOR_DEFAULTS
        found: list[str] = []
        merged = settings({**base, **self.defaults, **named, **inline, **own}, where, found)
        self.problems.extend((at, problem) for problem in found)
        return merged


def _route(task: Any, inputs: Any, ctx: dict[str, Any]) -> Any:
    """A routing stage's body: nothing to do, the context goes on to the fork or switch."""
    return {}


def _number(options: Mapping[str, Any], key: str, problems: list[tuple[Where, str]],
            at: Where, where: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        problems.append((at, f"{where}: {key} must be a number >= 0, not {value!r}"))
        return None
    return float(value)
