"""Conductor workflow definitions (JSON) loaded as a :class:`WorkflowApp`.

:func:`load_workflow` reads a definition (:mod:`streamtask.conductor.definitions`), compiles
its tasks into stages (:mod:`streamtask.conductor.compiler`, whose docstring says what each
task type becomes) and declares them on a :class:`WorkflowApp`, which knows where runs start
and where WAIT and HUMAN tasks take their signals. Every task of a run carries the run's
context (see :mod:`streamtask.conductor.context`).

Nothing is silently dropped: unsupported task types (nested ones included), unknown options
and missing handlers are all collected and raised as one :class:`ConfigurationError`. An
unknown option whose value is empty or off (``false``, ``0``, ``null``, ``""``, ``[]``,
``{}``) changes nothing and is accepted, so exported definitions load; name others in
``ignore`` to accept losing them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from streamtask.conductor.compiler import Compiler
from streamtask.conductor.context import DEFAULT_CONTEXT_LIMIT, END, Workflow
from streamtask.conductor.definitions import (
    MAX_NESTING,
    mapping_of,
    nesting,
    parse_definition,
    passthrough,
    passthrough_handlers,
    registry_of,
    sanitise,
    task_defs_of,
    tasks_of,
    with_names,
    workflow_problems,
)
from streamtask.conductor.failures import FAILURE
from streamtask.conductor.handlers import end_handler
from streamtask.conductor.loops import DEFAULT_MAX_ITERATIONS
from streamtask.conductor.taskdefs import CONDUCTOR_DEFAULTS, TASK_LEVEL
from streamtask.conductor.waits import signal_payload
from streamtask.config import KafkaSettings
from streamtask.errors import ConfigurationError
from streamtask.model.app import App, Handler
from streamtask.model.envelope import Task, new_task_id
from streamtask.retry import NO_RETRIES

__all__ = ["WorkflowApp", "load_workflow", "parse_definition", "passthrough",
           "passthrough_handlers"]


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
        """Complete (or fail) the WAIT, HUMAN or asyncComplete task ``task_ref`` of run
        ``run_id`` with ``output``; returns once the broker has the signal. A signal may
        arrive before the run reaches the task: it waits there (see
        :mod:`streamtask.conductor.waits`)."""
        stage = self.signals.get(task_ref)
        if stage is None:
            known = ", ".join(sorted(self.signals)) or "none"
            raise ConfigurationError(f"workflow {self.workflow.name!r} has no WAIT, HUMAN or "
                                     f"asyncComplete task {task_ref!r} (waiting tasks: "
                                     f"{known})")
        task = Task.new(stage, signal_payload(output or {}, status, reason), run_id=run_id,
                        key=run_id, pipeline_version=self.version)
        with self.producer() as producer:
            future = producer.send_task(task)
            producer.flush(timeout)
        future.result(timeout)



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
    raw = _read(definition)
    defaults = dict(task_defaults or {})
    if unknown := sorted(set(defaults) - set(CONDUCTOR_DEFAULTS) - TASK_LEVEL
                         - {"responseTimeoutSeconds", "timeoutPolicy", "maxRetryDelaySeconds",
                            "concurrentExecLimit"}):
        raise ConfigurationError(f"task_defaults: unknown option(s) {', '.join(unknown)}")
    title = raw.get("name")
    if not isinstance(title, str) or not title:
        title = "workflow"
    workflow = Workflow(title, raw.get("version"), mapping_of(raw, "outputParameters"),
                        mapping_of(raw, "inputTemplate"), mapping_of(raw, "variables"),
                        context_limit, _number(raw.get("timeoutSeconds")),
                        str(raw.get("timeoutPolicy") or "ALERT_ONLY"))
    compiler = Compiler(workflow, defaults, task_defs_of(task_defs), set(ignore), raw)
    compiler.max_iterations = max_iterations
    compiler.sub_workflows = registry_of(sub_workflows)
    known = compiler.sub_workflows

    def load(child: Mapping[str, Any]) -> WorkflowApp:  # START_WORKFLOW's targets, alike
        return load_workflow(child, passthrough_handlers(child, known), kafka=kafka,
                             partitions=partitions, sub_workflows=known)
    compiler.loader = load
    if raw.get("name") in (None, "") and name is None:
        compiler.note((), "the definition has no 'name' (or pass name=...)")
    compiler.problems.extend(((), p) for p in workflow_problems(raw, compiler.ignore))
    try:
        entry = compiler.compile(tasks_of(raw))
    except RecursionError as exc:  # each level is bounded, but sub-workflows add up
        raise ConfigurationError(f"workflow {title!r} cannot be loaded: its sub-workflows "
                                 "nest too deeply") from exc
    if raw.get("failureWorkflow"):
        compiler.failure_workflow(raw["failureWorkflow"])
    problems = compiler.report(handlers)
    if problems:
        raise ConfigurationError(f"workflow {title!r} cannot be loaded: " + "; ".join(problems))
    app = WorkflowApp(name or sanitise(title), kafka=kafka, version=raw.get("version"))
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


def _read(definition: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """The definition, its nameless tasks named; one error if it nests too deeply to
    compile (compiling recurses once per level)."""
    try:
        raw = with_names(parse_definition(definition))
    except RecursionError as exc:
        raise ConfigurationError("the workflow definition nests too deeply to read") from exc
    tasks = raw.get("tasks")
    depth = nesting(tasks) if isinstance(tasks, list) else 0
    if depth > MAX_NESTING:
        raise ConfigurationError(f"workflow {raw.get('name')!r} nests tasks {depth} levels "
                                 f"deep (branches, cases, loops); at most {MAX_NESTING}")
    return raw


def _number(value: Any) -> float:
    """A workflow's ``timeoutSeconds`` as seconds (a bad value is reported, and 0 here)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and value > 0 else 0.0
