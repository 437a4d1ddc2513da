"""Conductor workflow definitions (JSON) compiled into a :class:`WorkflowApp`.

A definition's ``tasks`` run in sequence; each becomes one or more stages whose ``then=``
leads to the next task's first stage, and the last sends the run to the stage ``_end``.
Every task of a run carries the run's context (see :mod:`streamtask.conductor.context`):
a stage resolves its task's ``inputParameters`` against it, runs the task, and records the
output for later tasks. What maps, and how (the README's workflow section lists every
option):

* ``SIMPLE`` (or no ``type``): a stage named by the task's ``name`` (by its reference name
  when tasks share a name), run by ``handlers[name]``; retries and timeouts come from its
  task definition (:mod:`streamtask.conductor.taskdefs`).
* ``FORK_JOIN`` + ``JOIN``: the stage before it forks to every branch; each branch's last
  stage sends to the join (the ``JOIN`` that follows, or an implicit ``<fork name>_join``).
* ``SWITCH`` / ``DECISION``: routing, not a stage: the stage in front of the switch picks
  the case (value-param or JavaScript) after its own task.
* ``DO_WHILE`` (:mod:`streamtask.conductor.loops`), ``WAIT`` / ``HUMAN``
  (:mod:`streamtask.conductor.waits`), ``SUB_WORKFLOW``
  (:mod:`streamtask.conductor.subworkflows`), ``FORK_JOIN_DYNAMIC``
  (:mod:`streamtask.conductor.dynamic`) and the system tasks of
  :mod:`streamtask.conductor.systemtasks`.

Where a fork or switch has no stage in front of it (the first task of the workflow, of a
branch or of a case), a routing stage named after that task passes the context on.

Nothing is silently dropped: unsupported task types (nested ones included), unknown options
and missing handlers are all collected and raised as one :class:`ConfigurationError`. An
unknown option whose value is empty or off (``false``, ``0``, ``null``, ``""``, ``[]``,
``{}``) changes nothing and is accepted, so exported definitions load; name others in
``ignore`` to accept losing them.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streamtask.conductor import dynamic, failures, starts, subworkflows, systemtasks
from streamtask.conductor.context import (
    CASE,
    DEFAULT_CONTEXT_LIMIT,
    END,
    ROUTE,
    Body,
    Step,
    SwitchSpec,
    Workflow,
)
from streamtask.conductor.failures import FAILURE
from streamtask.conductor.handlers import end_handler, step_handler
from streamtask.conductor.loops import DEFAULT_MAX_ITERATIONS, Loop
from streamtask.conductor.scripts import missing_extra
from streamtask.conductor.taskdefs import (
    CONDUCTOR_DEFAULTS,
    SYSTEM_DEFAULTS,
    TASK_LEVEL,
    parse_task_defs,
    settings,
    unsupported_options,
)
from streamtask.conductor.waits import DEFAULT_DEADLINE, parse_duration, resume, signal_payload
from streamtask.config import KafkaSettings
from streamtask.errors import ConfigurationError
from streamtask.model.app import App, Handler
from streamtask.model.envelope import Task, new_task_id
from streamtask.model.pipeline import JoinSpec, Switch, Then
from streamtask.retry import NO_RETRIES, RetryPolicy
from streamtask.worker.ratelimit import RateLimit

SIMPLE, FORK_JOIN, JOIN, SWITCH, DECISION = "SIMPLE", "FORK_JOIN", "JOIN", "SWITCH", "DECISION"
TERMINATE, SET_VARIABLE, INLINE, LAMBDA = "TERMINATE", "SET_VARIABLE", "INLINE", "LAMBDA"
JSON_JQ, HTTP, EXCLUSIVE_JOIN = "JSON_JQ_TRANSFORM", "HTTP", "EXCLUSIVE_JOIN"
DO_WHILE, WAIT, HUMAN, SUB_WORKFLOW = "DO_WHILE", "WAIT", "HUMAN", "SUB_WORKFLOW"
DYNAMIC, PERMISSIVE, START_WORKFLOW = "FORK_JOIN_DYNAMIC", "PERMISSIVE", "START_WORKFLOW"
MAX_SUB_WORKFLOW_DEPTH = 8
"""How deep sub-workflows may nest."""
_DESCRIPTIVE = {"name", "taskReferenceName", "type", "description"}
_TASK = {"inputParameters", "taskDefinition", *TASK_LEVEL, "optional", "permissive"}
_OPTIONS: dict[str, set[str]] = {
    SIMPLE: _TASK, HTTP: _TASK, INLINE: _TASK, JSON_JQ: _TASK, SET_VARIABLE: _TASK,
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
SIGNAL = "signal"
"""The kind of a WAIT/HUMAN task's signal stage: passes signals on to its resume join."""
_SYSTEM = {HTTP, INLINE, JSON_JQ, SET_VARIABLE, LAMBDA, TERMINATE, EXCLUSIVE_JOIN, DYNAMIC,
           START_WORKFLOW}
_WORKFLOW_KEYS = {"name", "version", "tasks", "description", "schemaVersion", "ownerEmail",
                  "ownerApp", "inputParameters", "createTime", "updateTime", "createdBy",
                  "updatedBy", "restartable", "outputParameters", "inputTemplate",
                  "variables", "timeoutPolicy", "timeoutSeconds", "tags", "metadata",
                  "failureWorkflow"}
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")  # as streamtask.model.app requires
_JAVASCRIPT = ("javascript", "graaljs")
_NESTED = ("forkTasks", "decisionCases", "defaultCase", "loopOver")

_Where = tuple[int, ...]
"""Where a task sits in the definition (indexes into task lists, branches and cases);
stages and problems are sorted by it so both read in the definition's order."""


@dataclass(frozen=True)
class CaseSwitch(Switch):
    """A SWITCH/DECISION: routes on the case the stage in front of it chose (``ref``)."""

    ref: str = ""


class WorkflowApp(App):
    """An App built from a Conductor workflow: it knows where runs start."""

    workflow: Workflow
    entry: str
    signals: dict[str, str]
    """The signal stage of each WAIT and HUMAN task, by reference name."""

    def start(self, workflow_input: Mapping[str, Any] | None = None, *,
              correlation_id: str | None = None, timeout: float = 30.0) -> str:
        """Start a run with ``workflow_input``; returns its id once the broker has its first
        task. Every task of the run carries the id as ``run_id`` (``${workflow.workflowId}``)."""
        run_id = new_task_id()
        future = self.send(self.entry, self.workflow.new_context(workflow_input,
                                                                 correlation_id),
                           task_id=run_id)
        self.flush(timeout)
        future.result(timeout)
        return run_id

    def signal(self, run_id: str, task_ref: str, output: Mapping[str, Any] | None = None, *,
               status: str = "COMPLETED", reason: str | None = None,
               timeout: float = 30.0) -> None:
        """Complete (or fail) the WAIT or HUMAN task ``task_ref`` of run ``run_id`` with
        ``output``; returns once the broker has the signal. A signal may arrive before the
        run reaches the task: it waits there (see :mod:`streamtask.conductor.waits`)."""
        stage = self.signals.get(task_ref)
        if stage is None:
            known = ", ".join(sorted(self.signals)) or "none"
            raise ConfigurationError(f"workflow {self.workflow.name!r} has no WAIT or HUMAN "
                                     f"task {task_ref!r} (waiting tasks: {known})")
        task = Task.new(stage, signal_payload(output or {}, status, reason), run_id=run_id,
                        key=run_id, pipeline_version=self.version)
        with self.producer() as producer:
            future = producer.send_task(task)
            producer.flush(timeout)
        future.result(timeout)


def passthrough(task: Any) -> Any:
    """A handler that returns its input: stands in for real handlers when only the shape
    of a workflow matters (``pipeline check``, ``graph``), and runs routing stages."""
    return task.payload


def parse_definition(definition: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """The definition as a dict: a mapping as is, a :class:`Path` read as JSON, a string
    parsed as JSON text when it starts with ``{`` and read as a file path otherwise."""
    if isinstance(definition, Mapping):
        return dict(definition)
    text, source = str(definition), "workflow definition"
    if isinstance(definition, Path) or not text.lstrip().startswith("{"):
        source = text
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read workflow file {source!r}: "
                                     f"{exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"workflow file {source!r} is not JSON text (not UTF-8 "
                                     f"at byte {exc.start})") from exc
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{source} must be a JSON object with 'name' and 'tasks'")
    return loaded


def passthrough_handlers(definition: Mapping[str, Any] | str | Path,
                         sub_workflows: Any = None) -> dict[str, Handler]:
    """An identity handler for every SIMPLE task (nested ones, and those of inline and
    given sub-workflows, included), by task name."""
    definitions = [parse_definition(definition), *_registry(sub_workflows).values()]
    found: dict[str, Handler] = {}
    while definitions:
        tasks = definitions.pop().get("tasks")
        for task in _walk(tasks if isinstance(tasks, list) else []):
            if _type_of(task) in (SIMPLE, PERMISSIVE) and isinstance(task.get("name"), str):
                found[task["name"]] = passthrough
            inline = (task.get("subWorkflowParam") or {}).get("workflowDefinition")
            if isinstance(inline, Mapping):
                definitions.append(dict(inline))
    return found


def _shared_names(tasks: list[Any]) -> set[Any]:
    names = Counter(t.get("name") for t in _walk(tasks))
    return {n for n, count in names.items() if count > 1}


def _registry(sub_workflows: Any) -> dict[str, dict[str, Any]]:
    """Sub-workflow definitions by name, from a mapping of names to definitions, or a list
    of definitions (dicts, JSON text or file paths)."""
    if sub_workflows is None:
        return {}
    given = sub_workflows.values() if isinstance(sub_workflows, Mapping) else sub_workflows
    found: dict[str, dict[str, Any]] = {}
    for item in given:
        definition = parse_definition(item)
        if isinstance(definition.get("name"), str):
            found[definition["name"]] = definition
    return found


def load_workflow(definition: Mapping[str, Any] | str | Path, handlers: Mapping[str, Handler],
                  *, kafka: KafkaSettings | None = None, partitions: int = 3,
                  name: str | None = None, task_defaults: Mapping[str, Any] | None = None,
                  task_defs: Any = None, ignore: Collection[str] = (),
                  on_end: Handler | None = None,
                  context_limit: int = DEFAULT_CONTEXT_LIMIT,
                  max_iterations: int = DEFAULT_MAX_ITERATIONS,
                  sub_workflows: Any = None) -> WorkflowApp:
    """Build an App from a Conductor workflow definition; see the module docstring.

    The App is named after the workflow (sanitised to letters, digits, ``_`` and ``-``)
    unless ``name`` is given, and carries its ``version``. Every stage gets ``partitions``.
    ``task_defaults`` supplies task-definition options a task leaves out (e.g.
    ``{"retryDelaySeconds": 2}``); ``task_defs`` is Conductor's task metadata (a list of
    TaskDefs, or a path to a JSON file of them); ``ignore`` names options to accept without
    effect. ``on_end`` is called with every finished run's last task (see
    :func:`~streamtask.conductor.context.run_result`). ``context_limit`` bounds a run's
    context (bytes of JSON) and ``max_iterations`` the passes of each DO_WHILE.
    ``sub_workflows`` gives the definitions SUB_WORKFLOW tasks name (a list of definitions,
    or a mapping of names to definitions; dicts, JSON text or paths). Raises one
    :class:`ConfigurationError` listing every problem found.
    """
    raw = _named(parse_definition(definition))
    defaults = dict(task_defaults or {})
    if unknown := sorted(set(defaults) - set(CONDUCTOR_DEFAULTS) - TASK_LEVEL
                         - {"responseTimeoutSeconds", "timeoutPolicy", "maxRetryDelaySeconds",
                            "concurrentExecLimit"}):
        raise ConfigurationError(f"task_defaults: unknown option(s) {', '.join(unknown)}")
    title = raw.get("name")
    if not isinstance(title, str) or not title:
        title = "workflow"
    workflow = Workflow(title, raw.get("version"), _mapping(raw, "outputParameters"),
                        _mapping(raw, "inputTemplate"), _mapping(raw, "variables"),
                        context_limit)
    compiler = _Compiler(workflow, defaults, _task_defs(task_defs), set(ignore), raw)
    compiler.max_iterations = max_iterations
    compiler.sub_workflows = _registry(sub_workflows)
    compiler.kafka, compiler.partitions = kafka, partitions
    if raw.get("name") in (None, "") and name is None:
        compiler.note((), "the definition has no 'name' (or pass name=...)")
    compiler.problems.extend(((), p) for p in _workflow_problems(raw, compiler.ignore))
    entry = compiler.compile(_tasks_of(raw))
    if raw.get("failureWorkflow"):
        compiler.failure_workflow(raw["failureWorkflow"])
    problems = compiler.report(handlers)
    if problems:
        raise ConfigurationError(f"workflow {title!r} cannot be loaded: " + "; ".join(problems))
    app = WorkflowApp(name or _sanitise(title), kafka=kafka, version=raw.get("version"))
    app.workflow, app.entry, app.signals = workflow, entry, dict(compiler.signals)
    for decl in sorted(compiler.decls.values(), key=lambda d: d.position):
        if FAILURE in compiler.decls and not decl.name.startswith(FAILURE):
            decl.compensate = FAILURE  # a dead-lettered task starts the failure workflow
        decl.declare(app, handlers, partitions, compiler.switches)
    failure = FAILURE if FAILURE in compiler.decls else None
    app.stage(END, then=None, retry=NO_RETRIES, timeout=None,
              partitions=partitions)(end_handler(on_end, failure))
    app.validate()
    return app


def _named(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of the definition where a task without a ``name`` (Conductor allows it for
    system tasks) is named by its ``taskReferenceName``, and a PERMISSIVE task is what
    Conductor's harness means by it: a worker (SIMPLE) task with ``permissive`` set."""
    raw = copy.deepcopy(raw)
    tasks = raw.get("tasks")
    for task in _walk(tasks if isinstance(tasks, list) else []):
        if "name" not in task and isinstance(task.get("taskReferenceName"), str):
            task["name"] = task["taskReferenceName"]  # type: ignore[index]
        if task.get("type") == PERMISSIVE:
            task.update(type=SIMPLE, permissive=True)  # type: ignore[attr-defined]
    return raw


def _task_defs(task_defs: Any) -> dict[str, dict[str, Any]]:
    if task_defs is None:
        return {}
    if isinstance(task_defs, str | Path):
        try:
            text = Path(task_defs).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read taskDefs file {str(task_defs)!r}: "
                                     f"{exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"taskDefs file {str(task_defs)!r} is not JSON text (not "
                                     f"UTF-8 at byte {exc.start})") from exc
        try:
            task_defs = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"taskDefs file {str(task_defs)!r} is not valid JSON: "
                                     f"{exc}") from exc
    return parse_task_defs(task_defs)


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def _sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:100] or "workflow"


def _tasks_of(raw: Mapping[str, Any]) -> list[Any]:
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConfigurationError("a workflow definition needs a non-empty 'tasks' list")
    return tasks


def _workflow_problems(raw: Mapping[str, Any], ignore: set[str]) -> list[str]:
    found = []
    version = raw.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or version < 1):
        found.append(f"version must be an integer of 1 or more, not {version!r}")
    unknown = [key for key in raw if key not in _WORKFLOW_KEYS | ignore and raw[key]]
    if raw.get("timeoutSeconds"):
        unknown.append("timeoutSeconds")  # a workflow-wide deadline: not supported yet
    if unknown:
        found.append(f"unsupported workflow option(s) {', '.join(sorted(unknown))} "
                     "(pass ignore=[...] to accept losing them)")
    for key in ("outputParameters", "inputTemplate", "variables"):
        if raw.get(key) and not isinstance(raw[key], Mapping):
            found.append(f"{key} must be an object")
    return found


def _type_of(task: Mapping[str, Any]) -> str:
    kind = task.get("type", SIMPLE)
    return kind if isinstance(kind, str) else repr(kind)


def _nested(task: Mapping[str, Any]) -> Iterator[list[Any]]:
    """Every task list inside a task: branches, cases, loop bodies."""
    for key in _NESTED:
        value = task.get(key)
        if key == "decisionCases" and isinstance(value, Mapping):
            yield from (case for case in value.values() if isinstance(case, list))
        elif key == "forkTasks":
            yield from _lists(value)
        elif isinstance(value, list):
            yield value


def _walk(tasks: list[Any]) -> Iterator[Mapping[str, Any]]:
    """Every task object of a task list, nested branches, cases and loops included."""
    for task in tasks:
        if not isinstance(task, Mapping):
            continue
        yield task
        for inner in _nested(task):
            yield from _walk(inner)


def _lists(value: Any) -> list[list[Any]]:
    return [item for item in value if isinstance(item, list)] if isinstance(value, list) else []


@dataclass
class _Decl:
    """A stage to declare: a task's (``kind`` task), a join, or a routing stage."""

    name: str
    kind: str
    position: _Where
    ref: str
    step: Step
    then: Then = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    branches: tuple[str, ...] = ()
    concurrency: int | None = None
    task_name: str = ""
    body: Body | None = field(default=None, repr=False)
    on_timeout: str = "dead-letter"
    make_body: Callable[[Mapping[str, Handler]], Body] | None = field(default=None, repr=False)
    """For a body that needs the handlers (FORK_JOIN_DYNAMIC)."""
    compensate: str | None = None
    rate_limit: RateLimit | None = None

    def declare(self, app: App, handlers: Mapping[str, Handler], partitions: int,
                switches: Mapping[str, SwitchSpec]) -> None:
        route = self.then if isinstance(self.then, CaseSwitch) else None
        step = replace(self.step, ends=self.then == END, route=route,
                       switch=switches[route.ref] if route is not None else None)
        body = self.make_body(handlers) if self.make_body is not None else self.body
        handler = passthrough if self.kind == SIGNAL else step_handler(
            step, handlers.get(self.task_name) if self.kind == SIMPLE else None, body)
        if self.kind == JOIN:
            assert not isinstance(self.then, Switch) and self.timeout is not None
            external = self.branches[1:] if self.step.waits else ()
            app.stage(self.name, then=self.then, partitions=partitions, retry=NO_RETRIES,
                      join=JoinSpec(self.branches, self.timeout, self.on_timeout, external),
                      compensate=self.compensate)(handler)
        else:
            app.stage(self.name, then=self.then, retry=self.retry or NO_RETRIES,
                      timeout=self.timeout, partitions=partitions,
                      concurrency=self.concurrency, compensate=self.compensate,
                      rate_limit=self.rate_limit)(handler)


@dataclass(frozen=True)
class _Part:
    """A compiled task sequence: where tasks enter it (``entry``), the stage that ends it
    (``last``, if one does), and the first task with its position (``head``, ``at``), whose
    routing stage stands in where a single stage is needed but ``entry`` is a fork/switch."""

    entry: Then
    last: str | None = None
    head: Mapping[str, Any] | None = None
    at: _Where = ()


class _Compiler:
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
        self.problems: list[tuple[_Where, str]] = []
        self.unsupported: list[tuple[_Where, str]] = []
        self.decls: dict[str, _Decl] = {}
        self.switches: dict[str, SwitchSpec] = {}
        self.max_iterations = DEFAULT_MAX_ITERATIONS
        self.signals: dict[str, str] = {}
        self.fork_depth = 0
        self.prefix, self.end = "", END
        self.sub_workflows: dict[str, dict[str, Any]] = {}
        self.kafka: KafkaSettings | None = None
        self.partitions = 3
        """Where a START_WORKFLOW's runs go (the started workflow's app is loaded alike)."""
        self.dynamic: dict[str, str] = {}
        """The JOIN reference of each FORK_JOIN_DYNAMIC, by its reference."""
        self.within: tuple[str, ...] = (str(raw.get("name")),)
        self.shared_names = _shared_names(_tasks_of(raw))
        refs = Counter(t.get("taskReferenceName") for t in _walk(_tasks_of(raw)))
        for ref, count in refs.items():
            if ref is not None and count > 1:
                self.note((), f"taskReferenceName {ref!r} is used {count} times; each task "
                          "needs its own (expressions find tasks by it)")

    def note(self, at: _Where, problem: str) -> None:
        self.problems.append((at, problem))

    def compile(self, tasks: list[Any]) -> str:
        """Compile the workflow; returns the stage its runs start at."""
        start = self.sequence(tasks, _Part(END, END), ())
        return self.stage_of(start, "the workflow's start")

    def report(self, handlers: Mapping[str, Handler]) -> list[str]:
        """Every problem: unsupported tasks first, then the rest, then missing handlers."""
        found = [problem for _, problem in sorted(self.problems, key=lambda p: p[0])]
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

    def sequence(self, tasks: list[Any], after: _Part, path: _Where) -> _Part:
        """Compile tasks that run one after the other, ending in ``after``."""
        units: list[tuple[_Where, Mapping[str, Any], Mapping[str, Any] | None]] = []
        for index, task in enumerate(tasks):
            before = tasks[index - 1] if index else None
            if not isinstance(task, Mapping) or not isinstance(task.get("name"), str):
                self.note((*path, index), f"task {str(task)[:60]!r} is not an object with a "
                          "name")
            elif _type_of(task) != JOIN:
                following = tasks[index + 1] if index + 1 < len(tasks) else None
                join = following if _type_of(task) in (FORK_JOIN, DYNAMIC) and \
                    _is_join(following) else None
                units.append(((*path, index), task, join))
            elif not (isinstance(before, Mapping) and _type_of(before) in (FORK_JOIN, DYNAMIC)):
                self.note((*path, index), f"JOIN {_label(task)} does not follow a FORK_JOIN")
        end = after.last
        for number, (at, task, join) in enumerate(reversed(units)):
            after = self.unit(task, join, after, at)
            end = after.last if number == 0 else end
        return replace(after, last=end)

    def unit(self, task: Mapping[str, Any], join: Mapping[str, Any] | None, after: _Part,
             at: _Where) -> _Part:
        kind = _type_of(task)
        if kind not in _OPTIONS:
            self.unsupported.append((at, f"{_label(task)} ({kind})"))
            for number, inner in enumerate(_nested(task)):
                self.sequence(inner, after, (*at, number))  # report what is inside too
            return after
        self.check_options(task, kind, at)
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
            self.dynamic[_ref_name(task)] = _ref_name(join) if join else \
                f"{_ref_name(task)}_join"
        return self.task(task, kind, after, at)

    def sub_workflow(self, task: Mapping[str, Any], after: _Part, at: _Where) -> _Part:
        """A SUB_WORKFLOW: the child's tasks in a frame (see
        :mod:`streamtask.conductor.subworkflows`)."""
        label, ref, name = _label(task), _ref_name(task), self.stage_name(task)
        raw = self.child_definition(task, at)
        if raw is None:
            return after
        child = Workflow(str(raw["name"]), raw.get("version"), _mapping(raw, "outputParameters"),
                         _mapping(raw, "inputTemplate"), _mapping(raw, "variables"),
                         self.workflow.context_limit)
        self.problems.extend((at, f"SUB_WORKFLOW {label}: {p}")
                             for p in _workflow_problems(raw, self.ignore))
        if raw.get("failureWorkflow"):
            self.note(at, f"SUB_WORKFLOW {label}: the failureWorkflow of a sub-workflow is not "
                      "supported")
        done = f"{name}_done"
        leave = after.entry if isinstance(after.entry, str) else \
            self.stage_of(after, f"the task after {label}")
        saved = (self.workflow, self.prefix, self.end, self.shared_names, self.within)
        self.workflow, self.prefix, self.end = child, f"{name}__", done
        self.shared_names, self.within = _shared_names(raw["tasks"]), (*self.within, child.name)
        try:
            enter = self.stage_of(self.sequence(raw["tasks"], _Part(done, done, task, (*at, 1)),
                                                (*at, 0)), f"the start of {label}")
        finally:
            (self.workflow, self.prefix, self.end, self.shared_names, self.within) = saved
        tolerate = "optional" if task.get("optional") else \
            "permissive" if task.get("permissive") else None
        self.add(_Decl(name, ROUTE, at, _ref(task),
                       Step(self.workflow, ref, ROUTE, task.get("inputParameters") or {}),
                       enter, body=subworkflows.enter(ref, child)))
        self.add(_Decl(done, ROUTE, (*at, 2), _ref(task),
                       Step(self.workflow, ref, ROUTE, tolerate=tolerate, retry=NO_RETRIES),
                       leave, body=subworkflows.leave(ref, child)))
        return _Part(name, done, task, at)

    def failure_workflow(self, name: Any) -> None:
        """Compile the ``failureWorkflow`` (see :mod:`streamtask.conductor.failures`)."""
        at: _Where = (1_000_000,)
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
                          at: _Where) -> None:
        """The stages of one failure workflow: ``stage``, its tasks, ``<stage>_done``."""
        raw = _named({**raw, "name": name})
        child = Workflow(name, raw.get("version"), _mapping(raw, "outputParameters"),
                         _mapping(raw, "inputTemplate"), _mapping(raw, "variables"),
                         self.workflow.context_limit)
        done = f"{stage}_done"
        saved = (self.workflow, self.prefix, self.end, self.shared_names)
        self.workflow, self.prefix, self.end = child, f"{stage}__", done
        self.shared_names = _shared_names(raw["tasks"])
        try:
            enter = self.stage_of(self.sequence(raw["tasks"], _Part(done, done, None, at),
                                                (*at, 0)), "the failure workflow's start")
        finally:
            self.workflow, self.prefix, self.end, self.shared_names = saved
        self.add(_Decl(stage, ROUTE, at, f"failureWorkflow {name!r}",
                       Step(self.workflow, stage, ROUTE), enter, body=failures.start(child)))
        self.add(_Decl(done, ROUTE, (*at, 1), f"failureWorkflow {name!r}",
                       Step(self.workflow, done, ROUTE), END, body=failures.finish(child)))

    def failure_by_input(self, key: str, at: _Where) -> None:
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
        self.add(_Decl(FAILURE, ROUTE, at, f"failureWorkflow from workflow.input.{key}",
                       Step(self.workflow, FAILURE, ROUTE),
                       CaseSwitch(CASE, targets, none, ref=FAILURE), body=failures.choose))
        self.add(_Decl(none, ROUTE, (*at, -1), f"failureWorkflow from workflow.input.{key}",
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

    def child_definition(self, task: Mapping[str, Any], at: _Where) -> dict[str, Any] | None:
        """The child workflow a SUB_WORKFLOW runs: inline, or given by name to the loader."""
        label, param = _label(task), task.get("subWorkflowParam")
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
        if problem is not None:
            self.note(at, f"SUB_WORKFLOW {label}: {problem}")
            return None
        assert raw is not None
        return _named({**raw, "name": name})

    def wait(self, task: Mapping[str, Any], kind: str, after: _Part, at: _Where) -> _Part:
        """A WAIT or HUMAN task: park, signal and resume stages (see
        :mod:`streamtask.conductor.waits`)."""
        name, ref, label = self.stage_name(task), _ref_name(task), _label(task)
        inputs = task.get("inputParameters") or {}
        if self.fork_depth:
            self.note(at, f"{kind} {label}: a waiting task inside a FORK_JOIN branch is not "
                      "supported (signals are keyed by run)")
        duration = self.duration(task, kind, inputs, at)
        deadline = duration or self.deadline(task)
        then = after.entry
        if not isinstance(then, str):
            then = self.stage_of(after, f"the task after {label}")
        resume_stage, signal = f"{name}_resume", f"{name}_signal"
        self.signals[ref] = signal
        self.add(_Decl(name, ROUTE, at, _ref(task), Step(self.workflow, ref, ROUTE),
                       resume_stage, body=_route))
        self.add(_Decl(signal, SIGNAL, at, _ref(task), Step(self.workflow, ref, ROUTE),
                       resume_stage))
        step = Step(self.workflow, ref, kind, inputs, waits=(name, signal),
                    tolerate="optional" if task.get("optional") else None, retry=NO_RETRIES)
        self.add(_Decl(resume_stage, JOIN, (*at, 1), _ref(task), step, then,
                       timeout=deadline, branches=(name, signal),
                       body=resume(ref, duration is not None),
                       on_timeout="partial" if duration is not None else "dead-letter"))
        return _Part(name, resume_stage, task, at)

    def duration(self, task: Mapping[str, Any], kind: str, inputs: Any,
                 at: _Where) -> float | None:
        """A WAIT's literal ``duration`` in seconds (None: it waits for a signal)."""
        if kind != WAIT or not isinstance(inputs, Mapping):
            return None
        if inputs.get("until") is not None:
            self.note(at, f"WAIT {_label(task)}: 'until' is not supported; give a duration")
        value = inputs.get("duration")
        if value is None:
            return None
        try:
            if not isinstance(value, str) or "${" in value:
                raise ConfigurationError(f"duration must be literal text, not {value!r}")
            return parse_duration(value) or None
        except ConfigurationError as exc:
            self.note(at, f"WAIT {_label(task)}: {exc}")
            return None

    def deadline(self, task: Mapping[str, Any]) -> float:
        """How long a task waits for its signal: its task definition's timeout, else
        :data:`~streamtask.conductor.waits.DEFAULT_DEADLINE`."""
        definition = {**self.task_defs.get(str(task["name"]), {}),
                      **(task.get("taskDefinition") or {})}
        given = [definition.get(k) for k in ("timeoutSeconds", "responseTimeoutSeconds")]
        numbers = [float(v) for v in given if isinstance(v, int | float) and v > 0]
        return min(numbers) if numbers else DEFAULT_DEADLINE

    def loop(self, task: Mapping[str, Any], after: _Part, at: _Where) -> _Part:
        """A DO_WHILE: a start stage, the body, and a check stage that goes round again or
        on (see :mod:`streamtask.conductor.loops`)."""
        name, ref, label = self.stage_name(task), _ref_name(task), _label(task)
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
                    tuple(_ref_name(t) for t in _walk(body)), self.max_iterations)
        check = f"{name}_loop"
        leave = after.entry if isinstance(after.entry, str) else \
            self.stage_of(after, f"the task after {label}")
        enter = self.stage_of(self.sequence(body, _Part(check, check, task, (*at, 1)),
                                            (*at, 0)), f"the loop body of {label}")
        inputs = task.get("inputParameters") or {}
        self.switches[f"{ref}#start"] = SwitchSpec(ref, "loop-start", "", {}, loop)
        self.switches[f"{ref}#loop"] = SwitchSpec(ref, "loop", "", inputs, loop)
        self.add(_Decl(name, DO_WHILE, at, _ref(task), Step(self.workflow, ref, DO_WHILE, inputs),
                       CaseSwitch(CASE, {"true": enter}, leave, ref=f"{ref}#start"),
                       body=loop.start))
        self.add(_Decl(check, ROUTE, (*at, 2), _ref(task),
                       Step(self.workflow, f"{ref}_loop", ROUTE),
                       CaseSwitch(CASE, {"true": enter}, leave, ref=f"{ref}#loop"), body=_route))
        return _Part(name, check, task, at)

    def task(self, task: Mapping[str, Any], kind: str, after: _Part, at: _Where) -> _Part:
        """A SIMPLE or system task: one stage running its step."""
        name = self.stage_name(task)
        options = self.task_settings(task, kind, at)
        tolerate = "optional" if task.get("optional") else \
            "permissive" if task.get("permissive") else None
        if kind == TERMINATE and tolerate:
            self.note(at, f"TERMINATE {_label(task)} cannot be optional")
        if kind == TERMINATE and self.fork_depth:
            self.note(at, f"TERMINATE {_label(task)} inside a FORK_JOIN branch is not "
                      "supported (the other branches would not be cancelled)")
        step = Step(self.workflow, _ref_name(task), kind, task.get("inputParameters") or {},
                    options.input_template, tolerate=tolerate, retry=options.retry)
        then = self.end if kind == TERMINATE else after.entry
        make_body = None
        if kind == DYNAMIC:
            make_body = functools.partial(
                dynamic.forked, task.get("dynamicForkTasksParam"),
                task.get("dynamicForkTasksInputParamName"), self.dynamic[_ref_name(task)])
        self.add(_Decl(name, SIMPLE if kind == SIMPLE else kind, at, _ref(task), step, then,
                       options.retry, options.timeout, concurrency=options.concurrency,
                       task_name=str(task["name"]), body=self.body(task, kind, at),
                       make_body=make_body, rate_limit=options.rate_limit))
        return _Part(name, name, task, at)

    def body(self, task: Mapping[str, Any], kind: str, at: _Where) -> Body | None:
        """What a system task does (None for SIMPLE: the user's handler)."""
        inputs = task.get("inputParameters") or {}
        if kind == LAMBDA:
            script = task.get("scriptExpression") or inputs.get("scriptExpression")
            if not isinstance(script, str):
                self.note(at, f"LAMBDA {_label(task)} needs a scriptExpression")
            self.need("js", at, f"LAMBDA {_label(task)}")
            return systemtasks.lambda_body(str(script))
        if kind == INLINE:
            evaluator = inputs.get("evaluatorType", "javascript")
            if evaluator not in (*_JAVASCRIPT, "value-param"):
                self.note(at, f"INLINE {_label(task)}: evaluatorType {evaluator!r} is not "
                          "supported; use javascript, graaljs or value-param")
            elif evaluator != "value-param":
                self.need("js", at, f"INLINE {_label(task)}")
        if kind == JSON_JQ:
            self.need("jq", at, f"JSON_JQ_TRANSFORM {_label(task)}")
        if kind == DYNAMIC:
            return None  # needs the handlers: made when declared
        if kind == START_WORKFLOW:
            return self.starter(task, at)
        if kind == EXCLUSIVE_JOIN:
            refs = [*_strings(task.get("joinOn")), *_strings(task.get("defaultExclusiveJoinTask"))]
            return systemtasks.exclusive_joiner(tuple(refs))
        return _BODIES.get(kind)

    def starter(self, task: Mapping[str, Any], at: _Where) -> Body:
        """A START_WORKFLOW's body (see :mod:`streamtask.conductor.starts`); a literal name
        the loader was not given is reported now."""
        given = (task.get("inputParameters") or {}).get("startWorkflow")
        name = given.get("name") if isinstance(given, Mapping) else None
        if isinstance(name, str) and "${" not in name and name not in self.sub_workflows:
            self.note(at, f"START_WORKFLOW {_label(task)}: workflow {name!r} is not given to "
                      "the loader (sub_workflows=[...], or --sub-workflow FILE)")
        registry, kafka, partitions = self.sub_workflows, self.kafka, self.partitions

        def load(raw: Mapping[str, Any]) -> WorkflowApp:
            return load_workflow(raw, passthrough_handlers(raw, registry), kafka=kafka,
                                 partitions=partitions, sub_workflows=registry)
        return starts.starter(registry, load)

    def need(self, extra: str, at: _Where, what: str) -> None:
        missing = missing_extra(extra)
        if missing is not None:
            self.note(at, f"{what} needs the optional extra: pip install '{missing}'")

    def fork(self, task: Mapping[str, Any], join: Mapping[str, Any] | None, after: _Part,
             at: _Where) -> _Part:
        branches = task.get("forkTasks")
        name = self.stage_name(join) if join is not None else f"{task['name']}_join"
        if not isinstance(branches, list) or len(branches) < 2 or \
                not all(isinstance(b, list) and b for b in branches):
            self.note(at, f"FORK_JOIN {_label(task)}: forkTasks must list two or more "
                      "non-empty branches (each a list of tasks)")
            return after
        join_at = (*at, len(branches))
        entries, lasts, last_refs = [], [], []
        for number, branch in enumerate(branches):
            self.fork_depth += 1
            part = self.sequence(branch, self.branch_end(branch, name, join or task, join_at),
                                 (*at, number))
            self.fork_depth -= 1
            entries.append(self.stage_of(part, f"branch {number + 1} of {_label(task)}"))
            if part.last is None:
                self.note(at, f"branch {number + 1} of FORK_JOIN {_label(task)} must end "
                          "with a task that has a stage (not a SWITCH or TERMINATE)")
            elif part.last != name:  # else it ends in an unsupported task, reported already
                lasts.append(part.last)
                last_refs.append(self.decls[part.last].step.ref)
        timeout = 300.0
        if join is not None:
            self.check_options(join, JOIN, join_at)
            self.check_join_on(join, branches, join_at)
            timeout = _number(join, "timeoutSeconds", self.problems, join_at, _label(join)) \
                or timeout
        then = after.entry
        if isinstance(then, Switch):  # a join cannot carry a switch: route via its stage
            then = self.stage_of(after, f"the task after {name!r}")
        join_on = tuple(join.get("joinOn") or last_refs) if join else tuple(last_refs)
        step = Step(self.workflow, _ref_name(join) if join else name, JOIN, join_on=join_on)
        self.add(_Decl(name, JOIN, join_at, _ref(join or task), step, then, timeout=timeout,
                       branches=tuple(lasts), body=systemtasks.joiner(join_on)))
        return _Part(tuple(entries), name, task, at)

    def branch_end(self, branch: list[Any], join: str, head: Mapping[str, Any],
                   at: _Where) -> _Part:
        """Where a fork branch's tasks go last: the join, or, when the branch ends in a
        switch, a routing stage ``<switch>_end`` that every case reaches (a join waits for
        one stage per branch)."""
        last = branch[-1] if branch else None
        if not (isinstance(last, Mapping) and _type_of(last) in (SWITCH, DECISION)
                and isinstance(last.get("name"), str)):
            return _Part(join, join, head, at)
        name = f"{self.stage_name(last)}_end"
        step = Step(self.workflow, f"{_ref_name(last)}_end", ROUTE)
        self.add(_Decl(name, ROUTE, at, _ref(last), step, join, body=_route))
        return _Part(name, name, last, at)

    def switch(self, task: Mapping[str, Any], after: _Part, at: _Where) -> _Part:
        ref = _ref_name(task)
        self.switches[ref] = self.switch_spec(task, at)
        cases = task.get("decisionCases") or {}
        if not isinstance(cases, Mapping) or not all(isinstance(c, list) for c in cases.values()):
            self.note(at, f"{_label(task)}: decisionCases must map values to task lists")
            cases = {}
        targets: dict[Any, str] = {}
        for number, (value, tasks) in enumerate(cases.items()):
            if not tasks and _decides(task):
                continue  # DECISION: a matched empty case falls back to the default
            part = self.sequence(tasks, after, (*at, number))
            targets[value] = self.stage_of(part, f"case {value!r} of {_label(task)}")
        default_tasks = task.get("defaultCase") or []
        if not isinstance(default_tasks, list):
            self.note(at, f"{_label(task)}: defaultCase must be a list of tasks")
            default_tasks = []
        default = None
        if default_tasks or after.entry is not None:  # Conductor: no match -> carry on
            part = self.sequence(default_tasks, after, (*at, len(cases)))
            default = self.stage_of(part, f"the default case of {_label(task)}")
        # every case goes on to ``after``, so the switch's sequence ends where it ends
        return _Part(CaseSwitch(CASE, targets, default, ref=ref), after.last, task, at)

    def switch_spec(self, task: Mapping[str, Any], at: _Where) -> SwitchSpec:
        """How the case is chosen: an input parameter's value, or a JavaScript expression."""
        kind, inputs = _type_of(task), task.get("inputParameters") or {}
        if _decides(task):  # DECISION, or a SWITCH with its legacy semantics
            script = task.get("caseExpression")
            evaluator = "javascript" if script else "value-param"
            expression = script or task.get("caseValueParam") or task.get("expression")
        else:
            evaluator, expression = task.get("evaluatorType") or "value-param", \
                task.get("expression")
        if evaluator in _JAVASCRIPT:
            evaluator = "javascript"
            self.need("js", at, f"{kind} {_label(task)}")
        elif evaluator != "value-param":
            self.note(at, f"{kind} {_label(task)}: evaluatorType {evaluator!r} is not "
                      "supported; use value-param, javascript or graaljs")
        if not isinstance(expression, str) or not expression:
            self.note(at, f"{kind} {_label(task)}: needs an expression (the input parameter "
                      "to switch on, or a script)")
            expression = ""
        if not isinstance(inputs, Mapping):
            self.note(at, f"{kind} {_label(task)}: inputParameters must be an object")
            inputs = {}
        return SwitchSpec(_ref_name(task), evaluator, expression, inputs)

    def stage_of(self, part: _Part, where: str) -> str:
        """One stage that receives ``part``'s tasks, adding a routing stage if needed."""
        if isinstance(part.entry, str):
            return part.entry
        if part.entry is None or part.head is None:
            self.note(part.at, f"{where} is empty and nothing follows it: give it a task")
            return "?"
        name = self.stage_name(part.head)
        known = self.decls.get(name)
        if known is None or known.kind != ROUTE or known.then != part.entry:
            step = Step(self.workflow, _ref_name(part.head), ROUTE)
            self.add(_Decl(name, ROUTE, part.at, _ref(part.head), step, part.entry,
                           body=_route))
        return name

    def add(self, decl: _Decl) -> None:
        if not _STAGE_NAME.match(decl.name):
            self.note(decl.position, f"task name {decl.name!r} is not a valid stage name: use "
                      "1-100 letters, digits, '_' or '-'")
        known = self.decls.get(decl.name)
        if known is not None:
            self.note(decl.position, f"stage name {decl.name!r} is used by both {known.ref} "
                      f"and {decl.ref}; give each task its own name")
            return
        self.decls[decl.name] = decl

    def check_options(self, task: Mapping[str, Any], kind: str, at: _Where) -> None:
        allowed = _DESCRIPTIVE | _OPTIONS[kind] | self.ignore
        unknown = sorted(key for key in task if key not in allowed and task[key] not in
                         (False, 0, None, "", [], {}))
        if unknown:
            self.note(at, f"{kind} {_label(task)}: unsupported option(s) {', '.join(unknown)} "
                      "(pass ignore=[...] to accept losing them)")
        if "inputParameters" in task and not isinstance(task["inputParameters"], Mapping):
            self.note(at, f"{kind} {_label(task)}: inputParameters must be an object")

    def check_join_on(self, join: Mapping[str, Any], branches: list[list[Any]],
                      at: _Where) -> None:
        """``joinOn`` must name tasks of the fork's branches. The join waits for every branch
        whatever it names (a branch may end in a switch), and outputs what it names."""
        if join.get("joinMode") not in (None, "SYNC", "ASYNC"):
            self.note(at, f"JOIN {_label(join)}: joinMode {join.get('joinMode')!r} is not SYNC "
                      "or ASYNC")
        join_on = join.get("joinOn")
        if not join_on:
            return
        inside = {str(t.get("taskReferenceName")) for branch in branches for t in _walk(branch)}
        if not isinstance(join_on, list) or not set(map(str, join_on)) <= inside:
            self.note(at, f"JOIN {_label(join)}: joinOn {join_on!r} must name tasks of the "
                      "FORK_JOIN's branches")

    def task_settings(self, task: Mapping[str, Any], kind: str, at: _Where) -> Any:
        """The task's merged task definition (see :mod:`streamtask.conductor.taskdefs`)."""
        where = f"{kind} {_label(task)}"
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


def _number(options: Mapping[str, Any], key: str, problems: list[tuple[_Where, str]],
            at: _Where, where: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        problems.append((at, f"{where}: {key} must be a number >= 0, not {value!r}"))
        return None
    return float(value)


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _decides(task: Mapping[str, Any]) -> bool:
    """Whether a switch has the legacy DECISION semantics: DECISION, or a SWITCH with
    ``evaluatorType: decision`` (the case is the input parameter ``caseValueParam`` or
    ``expression`` names, or what the script ``caseExpression`` returns)."""
    return _type_of(task) == DECISION or task.get("evaluatorType") == "decision"


def _is_join(task: Any) -> bool:
    return isinstance(task, Mapping) and isinstance(task.get("name"), str) and \
        _type_of(task) == JOIN


def _ref_name(task: Mapping[str, Any]) -> str:
    return str(task.get("taskReferenceName") or task.get("name"))


def _ref(task: Mapping[str, Any]) -> str:
    return f"task {task.get('name')!r} (ref {task.get('taskReferenceName', '-')!r})"


def _label(task: Mapping[str, Any]) -> str:
    ref = task.get("taskReferenceName")
    return f"{task.get('name')!r}" + (f" (ref {ref!r})" if ref else "")
