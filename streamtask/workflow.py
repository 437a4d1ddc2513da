"""Conductor workflow definitions (JSON) loaded into an :class:`~streamtask.app.App`.

A definition's ``tasks`` run in sequence; each becomes a stage whose ``then=`` is the next
task's first stage. What maps, and how:

* ``SIMPLE`` (or no ``type``): a stage named by the task's ``name``, run by
  ``handlers[name]``. ``retryCount``/``retryLogic``/``retryDelaySeconds`` become
  :meth:`RetryPolicy.conductor <streamtask.retry.RetryPolicy.conductor>` (Conductor's task
  defaults apply when absent: 3 retries, FIXED, 60 s; change them with ``task_defaults``);
  ``timeoutSeconds`` is the stage timeout (0 means none).
* ``FORK_JOIN``: the stage before it forks to the first stage of every ``forkTasks``
  branch; each branch's last stage sends to the join, which is the ``JOIN`` task that
  follows (its ``name``) or else an implicit ``<fork name>_join``. The join's handler is
  ``handlers[join name]`` if given, else :func:`~streamtask.pipeline.merged`.
* ``SWITCH`` (``evaluatorType: value-param``) and the legacy ``DECISION``: the stage before
  it gets a :class:`~streamtask.pipeline.Switch` on the payload field named by the last
  element of the input parameter (``${workflow.input.kind}`` or ``${ref.output.kind}`` ->
  ``kind``); every case continues to the task after the switch. Case values are strings.
* ``JOIN``: ``joinOn``, if given, must name the last task of every branch (a join waits for
  all of them); ``timeoutSeconds`` is the join's timeout (absent or 0: 300 s, after which
  the fork is dead-lettered).

Where a fork or switch has no stage in front of it (the first task of the workflow, of a
branch or of a case), a routing stage named after that task passes its input on.

Nothing is silently dropped: unsupported task types, unknown options and missing handlers
are all collected and raised as one :class:`ConfigurationError`. An unknown option whose
value is empty or off (``false``, ``0``, ``null``, ``""``, ``[]``, ``{}``) changes nothing
and is accepted, so exported definitions load; name others in ``ignore`` to accept losing
them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from streamtask.app import DEFAULT_TIMEOUT, App, Handler
from streamtask.config import KafkaSettings
from streamtask.errors import ConfigurationError
from streamtask.pipeline import Switch, Then, merged
from streamtask.retry import RetryPolicy

SIMPLE, FORK_JOIN, JOIN, SWITCH, DECISION = "SIMPLE", "FORK_JOIN", "JOIN", "SWITCH", "DECISION"
_DESCRIPTIVE = {"name", "taskReferenceName", "type", "description"}
_TASK_OPTIONS = {"retryCount", "retryLogic", "retryDelaySeconds", "timeoutSeconds"}
_OPTIONS: dict[str, set[str]] = {
    SIMPLE: _TASK_OPTIONS,
    FORK_JOIN: {"forkTasks"},
    JOIN: {"joinOn", "timeoutSeconds"},
    SWITCH: {"evaluatorType", "expression", "inputParameters", "decisionCases", "defaultCase"},
    DECISION: {"caseValueParam", "inputParameters", "decisionCases", "defaultCase"},
}
_WORKFLOW_KEYS = {"name", "version", "tasks", "description", "schemaVersion", "ownerEmail",
                  "ownerApp", "inputParameters", "createTime", "updateTime", "createdBy",
                  "updatedBy", "restartable"}
_RETRY_LOGIC = ("FIXED", "EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF")
_PARAMETER = re.compile(r"^\$\{(?:workflow\.input|[A-Za-z0-9_-]+\.output)\.([A-Za-z0-9_-]+)\}$")
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")  # as streamtask.app requires
_CONDUCTOR_RETRY = {"retryCount": 3, "retryLogic": "FIXED", "retryDelaySeconds": 60.0}
ROUTE = "route"
"""The kind of a routing stage: passes its input on to a fork or switch."""

_Where = tuple[int, ...]
"""Where a task sits in the definition (indexes into task lists, branches and cases);
stages and problems are sorted by it so both read in the definition's order."""


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
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{source} must be a JSON object with 'name' and 'tasks'")
    return loaded


def passthrough_handlers(definition: Mapping[str, Any] | str | Path) -> dict[str, Handler]:
    """An identity handler for every SIMPLE task (nested ones included), by task name."""
    return {task["name"]: passthrough for task in _walk(_tasks_of(parse_definition(definition)))
            if _type_of(task) == SIMPLE and isinstance(task.get("name"), str)}


def load_workflow(definition: Mapping[str, Any] | str | Path, handlers: Mapping[str, Handler],
                  *, kafka: KafkaSettings | None = None, partitions: int = 3,
                  name: str | None = None, task_defaults: Mapping[str, Any] | None = None,
                  ignore: Collection[str] = ()) -> App:
    """Build an App from a Conductor workflow definition; see the module docstring.

    The App is named after the workflow (sanitised to letters, digits, ``_`` and ``-``)
    unless ``name`` is given, and carries its ``version``. Every stage gets ``partitions``.
    ``task_defaults`` supplies SIMPLE task options a task leaves out (e.g.
    ``{"retryDelaySeconds": 2}``); ``ignore`` names options to accept without effect. Raises
    one :class:`ConfigurationError` listing every problem found.
    """
    raw = parse_definition(definition)
    defaults = dict(task_defaults or {})
    if unknown := sorted(set(defaults) - _TASK_OPTIONS):
        raise ConfigurationError(f"task_defaults: unknown option(s) {', '.join(unknown)}; "
                                 f"give any of {', '.join(sorted(_TASK_OPTIONS))}")
    title = raw.get("name")
    compiler = _Compiler(defaults, set(ignore))
    if not isinstance(title, str) or not title:
        title = "workflow"
        if name is None:
            compiler.note((), "the definition has no 'name' (or pass name=...)")
    compiler.problems.extend(((), p) for p in _workflow_problems(raw, compiler.ignore))
    compiler.compile(_tasks_of(raw))
    problems = compiler.report(handlers)
    if problems:
        raise ConfigurationError(f"workflow {title!r} cannot be loaded: " + "; ".join(problems))
    app = App(name or _sanitise(title), kafka=kafka, version=raw.get("version"))
    for decl in sorted(compiler.decls.values(), key=lambda d: d.position):
        decl.declare(app, handlers, partitions)
    app.validate()
    return app


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
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        found.append(f"version must be an integer, not {version!r}")
    unknown = [key for key in raw if key not in _WORKFLOW_KEYS | ignore and raw[key]]
    if unknown:
        found.append(f"unsupported workflow option(s) {', '.join(sorted(unknown))} "
                     "(pass ignore=[...] to accept losing them)")
    return found


def _type_of(task: Mapping[str, Any]) -> str:
    kind = task.get("type", SIMPLE)
    return kind if isinstance(kind, str) else repr(kind)


def _walk(tasks: list[Any]) -> Iterator[Mapping[str, Any]]:
    """Every task object of a task list, nested branches and cases included."""
    for task in tasks:
        if not isinstance(task, Mapping):
            continue
        yield task
        kind = _type_of(task)
        if kind == FORK_JOIN:
            for branch in _lists(task.get("forkTasks")):
                yield from _walk(branch)
        elif kind in (SWITCH, DECISION):
            cases = task.get("decisionCases")
            for case in _lists(list(cases.values()) if isinstance(cases, Mapping) else []):
                yield from _walk(case)
            default = task.get("defaultCase")
            yield from _walk(default if isinstance(default, list) else [])


def _lists(value: Any) -> list[list[Any]]:
    return [item for item in value if isinstance(item, list)] if isinstance(value, list) else []


@dataclass
class _Decl:
    """A stage to declare: a task's (``kind`` task), a join, or a routing stage."""

    name: str
    kind: str
    position: _Where
    ref: str
    then: Then = None
    retry: RetryPolicy | None = None
    timeout: float | None = DEFAULT_TIMEOUT
    branches: tuple[str, ...] = ()

    def declare(self, app: App, handlers: Mapping[str, Handler], partitions: int) -> None:
        if self.kind == JOIN:
            timeout = self.timeout if self.timeout is not None else DEFAULT_TIMEOUT
            assert not isinstance(self.then, Switch)  # the compiler puts a router in between
            app.join(self.name, branches=self.branches, then=self.then, timeout=timeout,
                     partitions=partitions)(handlers.get(self.name, merged))
        else:
            handler = handlers[self.name] if self.kind == SIMPLE else passthrough
            app.stage(self.name, then=self.then, retry=self.retry, timeout=self.timeout,
                      partitions=partitions)(handler)


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

    def __init__(self, defaults: dict[str, Any], ignore: set[str]) -> None:
        self.defaults = defaults
        self.ignore = ignore
        self.problems: list[tuple[_Where, str]] = []
        self.unsupported: list[tuple[_Where, str]] = []
        self.decls: dict[str, _Decl] = {}

    def note(self, at: _Where, problem: str) -> None:
        self.problems.append((at, problem))

    def compile(self, tasks: list[Any]) -> None:
        start = self.sequence(tasks, _Part(None), ())
        if start.entry is not None:
            self.stage_of(start, "the workflow's start")

    def report(self, handlers: Mapping[str, Handler]) -> list[str]:
        """Every problem: unsupported tasks first, then the rest, then missing handlers."""
        found = [problem for _, problem in sorted(self.problems, key=lambda p: p[0])]
        if self.unsupported:
            listed = ", ".join(text for _, text in sorted(self.unsupported))
            found.insert(0, f"unsupported task type(s): {listed}")
        missing = [d.name for d in sorted(self.decls.values(), key=lambda d: d.position)
                   if d.kind == SIMPLE and d.name not in handlers]
        if missing:
            found.append(f"no handler for task(s) {', '.join(missing)} (give handlers keyed "
                         "by task name)")
        return found

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
                join = following if _type_of(task) == FORK_JOIN and _is_join(following) \
                    else None
                units.append(((*path, index), task, join))
            elif not (isinstance(before, Mapping) and _type_of(before) == FORK_JOIN):
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
            return after
        self.check_options(task, kind, at)
        if kind == FORK_JOIN:
            return self.fork(task, join, after, at)
        if kind in (SWITCH, DECISION):
            return self.switch(task, after, at)
        retry, timeout = self.task_options(task, at)
        self.add(_Decl(task["name"], SIMPLE, at, _ref(task), after.entry, retry, timeout))
        return _Part(task["name"], task["name"], task, at)

    def fork(self, task: Mapping[str, Any], join: Mapping[str, Any] | None, after: _Part,
             at: _Where) -> _Part:
        branches = task.get("forkTasks")
        name = join["name"] if join is not None else f"{task['name']}_join"
        if not isinstance(branches, list) or len(branches) < 2 or \
                not all(isinstance(b, list) and b for b in branches):
            self.note(at, f"FORK_JOIN {_label(task)}: forkTasks must list two or more "
                      "non-empty branches (each a list of tasks)")
            return after
        join_at = (*at, len(branches))
        entries, lasts = [], []
        for number, branch in enumerate(branches):
            part = self.sequence(branch, _Part(name, name, join or task, join_at),
                                 (*at, number))
            entries.append(self.stage_of(part, f"branch {number + 1} of {_label(task)}"))
            if part.last is None:
                self.note(at, f"branch {number + 1} of FORK_JOIN {_label(task)} must end "
                          "with a SIMPLE task or a FORK_JOIN (its join)")
            elif part.last != name:  # else it ends in an unsupported task, reported already
                lasts.append(part.last)
        timeout = None
        if join is not None:
            self.check_options(join, JOIN, join_at)
            self.check_join_on(join, branches, join_at)
            timeout = _number(join, "timeoutSeconds", self.problems, join_at, _label(join))
        then = after.entry
        if isinstance(then, Switch):  # a join cannot carry a switch: route via its stage
            then = self.stage_of(after, f"the task after {name!r}")
        self.add(_Decl(name, JOIN, join_at, _ref(join or task), then, timeout=timeout or None,
                       branches=tuple(lasts)))
        return _Part(tuple(entries), name, task, at)

    def switch(self, task: Mapping[str, Any], after: _Part, at: _Where) -> _Part:
        field = self.switch_field(task, at)
        cases = task.get("decisionCases") or {}
        if not isinstance(cases, Mapping) or not all(isinstance(c, list) for c in cases.values()):
            self.note(at, f"{_label(task)}: decisionCases must map values to task lists")
            cases = {}
        targets: dict[Any, str] = {}
        for number, (value, tasks) in enumerate(cases.items()):
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
        return _Part(Switch(field, targets, default), None, task, at)

    def switch_field(self, task: Mapping[str, Any], at: _Where) -> str:
        """The payload field a value-param switch reads (see the module docstring)."""
        kind = _type_of(task)
        if kind == SWITCH and task.get("evaluatorType") != "value-param":
            self.note(at, f"SWITCH {_label(task)}: evaluatorType {task.get('evaluatorType')!r} "
                      "is not supported; use value-param (a switch on one payload field)")
            return "?"
        parameter = task.get("expression" if kind == SWITCH else "caseValueParam")
        inputs = task.get("inputParameters")
        value = inputs.get(parameter) if isinstance(inputs, Mapping) else None
        match = _PARAMETER.match(value) if isinstance(value, str) else None
        if match is None:
            self.note(at, f"{kind} {_label(task)}: input parameter {parameter!r} must be "
                      "'${workflow.input.FIELD}' or '${REF.output.FIELD}' with one top-level "
                      f"field, got {value!r}")
            return "?"
        return match.group(1)

    def stage_of(self, part: _Part, where: str) -> str:
        """One stage that receives ``part``'s tasks, adding a routing stage if needed."""
        if isinstance(part.entry, str):
            return part.entry
        if part.entry is None or part.head is None:
            self.note(part.at, f"{where} is empty and nothing follows it: give it a task")
            return "?"
        name = str(part.head["name"])
        known = self.decls.get(name)
        if known is None or known.kind != ROUTE or known.then != part.entry:
            self.add(_Decl(name, ROUTE, part.at, _ref(part.head), part.entry, timeout=None))
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

    def check_join_on(self, join: Mapping[str, Any], branches: list[list[Any]],
                      at: _Where) -> None:
        join_on = join.get("joinOn")
        if join_on is None:
            return
        last_refs = sorted(str(branch[-1].get("taskReferenceName", branch[-1].get("name")))
                           for branch in branches if isinstance(branch[-1], Mapping))
        if not isinstance(join_on, list) or sorted(map(str, join_on)) != last_refs:
            self.note(at, f"JOIN {_label(join)}: joinOn {join_on!r} must name the last task "
                      f"of every branch ({', '.join(last_refs)}); a join waits for all")

    def task_options(self, task: Mapping[str, Any],
                     at: _Where) -> tuple[RetryPolicy | None, float | None]:
        """The retry policy and timeout of a SIMPLE task (Conductor defaults filled in)."""
        options = {**_CONDUCTOR_RETRY, **self.defaults,
                   **{k: v for k, v in task.items() if k in _TASK_OPTIONS}}
        count, logic = options["retryCount"], options["retryLogic"]
        where = f"SIMPLE {_label(task)}"
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            self.note(at, f"{where}: retryCount must be a whole number >= 0, not {count!r}")
            count = None
        if logic not in _RETRY_LOGIC:
            self.note(at, f"{where}: retryLogic {logic!r} is not one of "
                      f"{', '.join(_RETRY_LOGIC)}")
            logic = None
        delay = _number(options, "retryDelaySeconds", self.problems, at, where)
        timeout: float | None = DEFAULT_TIMEOUT
        if "timeoutSeconds" in options:  # Conductor's 0 means no limit
            timeout = _number(options, "timeoutSeconds", self.problems, at, where) or None
        if count is None or logic is None or delay is None:
            return None, timeout
        try:
            return RetryPolicy.conductor(count, logic, delay), timeout
        except ConfigurationError as exc:
            self.note(at, f"{where}: {exc}")
            return None, timeout


def _number(options: Mapping[str, Any], key: str, problems: list[tuple[_Where, str]],
            at: _Where, where: str) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        problems.append((at, f"{where}: {key} must be a number >= 0, not {value!r}"))
        return None
    return float(value)


def _is_join(task: Any) -> bool:
    return isinstance(task, Mapping) and isinstance(task.get("name"), str) and \
        _type_of(task) == JOIN


def _ref(task: Mapping[str, Any]) -> str:
    return f"task {task.get('name')!r} (ref {task.get('taskReferenceName', '-')!r})"


def _label(task: Mapping[str, Any]) -> str:
    ref = task.get("taskReferenceName")
    return f"{task.get('name')!r}" + (f" (ref {ref!r})" if ref else "")

