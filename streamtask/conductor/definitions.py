"""Reading Conductor workflow definitions: JSON in, task lists walked, names checked.

What every part of the workflow compiler needs to know about a definition before any stage
is declared: the task types by name, how a definition is read (a mapping, JSON text or a
file), how nested task lists (branches, cases, loop bodies) are walked, and the problems of
the workflow's own fields. Nothing here declares stages; :mod:`streamtask.conductor.compiler`
does, and :func:`streamtask.model.workflow.load_workflow` puts the two together.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from streamtask.conductor.expressions import problems as expression_problems
from streamtask.conductor.taskdefs import parse_task_defs
from streamtask.errors import ConfigurationError
from streamtask.model.app import Handler

SIMPLE, FORK_JOIN, JOIN, SWITCH, DECISION = "SIMPLE", "FORK_JOIN", "JOIN", "SWITCH", "DECISION"
TERMINATE, SET_VARIABLE, INLINE, LAMBDA = "TERMINATE", "SET_VARIABLE", "INLINE", "LAMBDA"
JSON_JQ, HTTP, EXCLUSIVE_JOIN = "JSON_JQ_TRANSFORM", "HTTP", "EXCLUSIVE_JOIN"
DO_WHILE, WAIT, HUMAN, SUB_WORKFLOW = "DO_WHILE", "WAIT", "HUMAN", "SUB_WORKFLOW"
DYNAMIC, PERMISSIVE, START_WORKFLOW = "FORK_JOIN_DYNAMIC", "PERMISSIVE", "START_WORKFLOW"
EVENT = "EVENT"
WORKFLOW_KEYS = {"name", "version", "tasks", "description", "schemaVersion", "ownerEmail",
                  "ownerApp", "inputParameters", "createTime", "updateTime", "createdBy",
                  "updatedBy", "restartable", "outputParameters", "inputTemplate",
                  "variables", "timeoutPolicy", "timeoutSeconds", "tags", "metadata",
                  "failureWorkflow"}
NESTED = ("forkTasks", "decisionCases", "defaultCase", "loopOver")

WORKFLOW_TIMEOUT_POLICIES = ("TIME_OUT_WF", "ALERT_ONLY")
MAX_NESTING = 50
"""How deep tasks may nest in tasks (branches, cases, loop bodies) in one definition."""

Where = tuple[int, ...]
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
    text = str(definition)
    if isinstance(definition, Path) or not text.lstrip().startswith("{"):
        loaded, source = read_json("workflow file", text), text
    else:
        loaded, source = read_json("workflow definition", None, text), "workflow definition"
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"{source} must be a JSON object with 'name' and 'tasks'")
    return loaded


def read_json(what: str, path: str | Path | None, text: str | None = None) -> Any:
    """The JSON value in the file at ``path`` (or in ``text``); every way it can be
    unreadable (no file, not JSON, nested past the parser's depth) is one
    :class:`ConfigurationError` naming ``what`` it is."""
    source = what if path is None else f"{what} {str(path)!r}"
    if text is None:
        try:
            text = Path(str(path)).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read {source}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"{source} is not JSON text (not UTF-8 at byte "
                                     f"{exc.start})") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{source} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ConfigurationError(f"{source} nests its JSON too deeply to read") from exc


def passthrough_handlers(definition: Mapping[str, Any] | str | Path,
                         sub_workflows: Any = None) -> dict[str, Handler]:
    """An identity handler for every SIMPLE task (nested ones, and those of inline and
    given sub-workflows, included), by task name."""
    definitions = [parse_definition(definition), *registry_of(sub_workflows).values()]
    found: dict[str, Handler] = {}
    while definitions:
        tasks = definitions.pop().get("tasks")
        for task in walk(tasks if isinstance(tasks, list) else []):
            if type_of(task) in (SIMPLE, PERMISSIVE) and isinstance(task.get("name"), str):
                found[task["name"]] = passthrough
            param = task.get("subWorkflowParam")
            inline = param.get("workflowDefinition") if isinstance(param, Mapping) else None
            if isinstance(inline, Mapping):
                definitions.append(dict(inline))
    return found


def shared_names(tasks: list[Any]) -> set[Any]:
    names = Counter(t.get("name") for t in walk(tasks))
    return {n for n, count in names.items() if count > 1}


def registry_of(sub_workflows: Any) -> dict[str, dict[str, Any]]:
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


def with_names(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of the definition where a task without a ``name`` (Conductor allows it for
    system tasks) is named by its ``taskReferenceName``, and a PERMISSIVE task is what
    Conductor's harness means by it: a worker (SIMPLE) task with ``permissive`` set."""
    raw = copy.deepcopy(raw)
    tasks = raw.get("tasks")
    for task in walk(tasks if isinstance(tasks, list) else []):
        if "name" not in task and isinstance(task.get("taskReferenceName"), str):
            task["name"] = task["taskReferenceName"]  # type: ignore[index]
        if task.get("type") == PERMISSIVE:
            task.update(type=SIMPLE, permissive=True)  # type: ignore[attr-defined]
    return raw


def task_defs_of(task_defs: Any) -> dict[str, dict[str, Any]]:
    """Task definitions by name: Conductor's TaskDef list, or a JSON file holding one."""
    if task_defs is None:
        return {}
    if isinstance(task_defs, str | Path):
        task_defs = read_json("taskDefs file", task_defs)
    return parse_task_defs(task_defs)


def mapping_of(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:100] or "workflow"


def tasks_of(raw: Mapping[str, Any]) -> list[Any]:
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConfigurationError("a workflow definition needs a non-empty 'tasks' list")
    return tasks


def workflow_problems(raw: Mapping[str, Any], ignore: set[str], *,
                      child: bool = False) -> list[str]:
    """What is wrong with a definition's own fields (``child``: a sub-workflow's, whose
    ``timeoutSeconds`` is not enforced, so it is refused)."""
    found = []
    if not isinstance(raw.get("name"), str | None):
        found.append(f"name must be text, not {raw['name']!r}")
    if raw.get("schemaVersion") not in (None, 2):
        found.append(f"schemaVersion {raw['schemaVersion']!r} is not supported: Conductor "
                     "reads only schemaVersion 2")
    version = raw.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or version < 1):
        found.append(f"version must be an integer of 1 or more, not {version!r}")
    unknown = [key for key in raw if key not in WORKFLOW_KEYS | ignore and raw[key]]
    if raw.get("timeoutSeconds") and child and "timeoutSeconds" not in ignore:
        unknown.append("timeoutSeconds")  # a sub-workflow's own deadline: not enforced
    elif raw.get("timeoutSeconds") or raw.get("timeoutPolicy") is not None:
        found.extend(timeout_problems(raw))
    if unknown:
        found.append(f"unsupported workflow option(s) {', '.join(sorted(unknown))} "
                     "(pass ignore=[...] to accept losing them)")
    for key in ("outputParameters", "inputTemplate", "variables"):
        if raw.get(key) and not isinstance(raw[key], Mapping):
            found.append(f"{key} must be an object")
    found.extend(f"outputParameters: {problem}"
                 for problem in expression_problems(raw.get("outputParameters")))
    return found


def timeout_problems(raw: Mapping[str, Any]) -> list[str]:
    """A workflow's ``timeoutSeconds`` must be a number >= 0 and its ``timeoutPolicy`` one
    of Conductor's two for workflows."""
    found, seconds = [], raw.get("timeoutSeconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        found.append(f"timeoutSeconds must be a number >= 0, not {seconds!r}")
    if raw.get("timeoutPolicy", "ALERT_ONLY") not in WORKFLOW_TIMEOUT_POLICIES:
        found.append(f"timeoutPolicy {raw['timeoutPolicy']!r} is not one of "
                     f"{', '.join(WORKFLOW_TIMEOUT_POLICIES)}")
    return found


def type_of(task: Mapping[str, Any]) -> str:
    kind = task.get("type", SIMPLE)
    return kind if isinstance(kind, str) else repr(kind)


def nested_lists(task: Mapping[str, Any]) -> Iterator[list[Any]]:
    """Every task list inside a task: branches, cases, loop bodies."""
    for key in NESTED:
        value = task.get(key)
        if key == "decisionCases" and isinstance(value, Mapping):
            yield from (case for case in value.values() if isinstance(case, list))
        elif key == "forkTasks":
            yield from lists_in(value)
        elif isinstance(value, list):
            yield value


def walk(tasks: list[Any]) -> Iterator[Mapping[str, Any]]:
    """Every task object of a task list, nested branches, cases and loops included, in the
    definition's order. Iterative, so that any nesting is walked (and can be reported)."""
    pending: list[Iterator[Any]] = [iter(tasks)]
    while pending:
        task = next(pending[-1], _DONE)
        if task is _DONE:
            pending.pop()
        elif isinstance(task, Mapping):
            yield task
            pending.append(itertools.chain.from_iterable(nested_lists(task)))


_DONE = object()


def nesting(tasks: list[Any]) -> int:
    """How deep task lists nest inside tasks (1: no task holds another)."""
    deepest, pending = 0, [(tasks, 1)]
    while pending:
        found, level = pending.pop()
        deepest = max(deepest, level)
        pending.extend((inner, level + 1) for task in found if isinstance(task, Mapping)
                       for inner in nested_lists(task))
    return deepest


def lists_in(value: Any) -> list[list[Any]]:
    return [item for item in value if isinstance(item, list)] if isinstance(value, list) else []


def strings_in(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def decides(task: Mapping[str, Any]) -> bool:
    """Whether a switch has the legacy DECISION semantics: DECISION, or a SWITCH with
    ``evaluatorType: decision`` (the case is the input parameter ``caseValueParam`` or
    ``expression`` names, or what the script ``caseExpression`` returns)."""
    return type_of(task) == DECISION or task.get("evaluatorType") == "decision"


def is_join(task: Any) -> bool:
    return isinstance(task, Mapping) and isinstance(task.get("name"), str) and \
        type_of(task) == JOIN


def ref_name(task: Mapping[str, Any]) -> str:
    return str(task.get("taskReferenceName") or task.get("name"))


def task_ref(task: Mapping[str, Any]) -> str:
    return f"task {task.get('name')!r} (ref {task.get('taskReferenceName', '-')!r})"


def task_label(task: Mapping[str, Any]) -> str:
    ref = task.get("taskReferenceName")
    return f"{task.get('name')!r}" + (f" (ref {ref!r})" if ref else "")
