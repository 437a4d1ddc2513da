"""DO_WHILE: a loop over a task list, as a cycle of stages.

A DO_WHILE compiles to a start stage (named after the task), its body's stages, and a check
stage ``<name>_loop`` after the body that either sends the run back to the body or on to
what follows the loop. The loop's state lives in its own task record in the run's context:

* ``iteration`` (1 during the first pass; also at the top of the record, where
  ``${loop['iteration']}`` finds it, as in Conductor);
* each finished pass's outputs, by pass number (``${loop.output.2.ref}``); ``keepLastN`` in
  the input keeps only the last N of them, as Conductor's cleanup does;
* for ``items`` loops, ``loopItem`` and ``loopIndex``.

After each pass, ``loopCondition`` (JavaScript) runs with ``$`` = the loop's resolved input,
the loop's own output under its reference name, and each body task's output under its
reference name; the loop goes round again while it is true (and, with ``items``, while items
remain). A loop that would exceed its iteration limit is dead-lettered with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamtask.conductor.expressions import resolve
from streamtask.conductor.scripts import run_javascript
from streamtask.model.envelope import Task
from streamtask.retry import DeadLetter

DEFAULT_MAX_ITERATIONS = 1000
"""Passes a DO_WHILE may make before its run is dead-lettered (a guard against a
condition that never turns false)."""


@dataclass(frozen=True)
class Loop:
    """One DO_WHILE: what decides whether it goes round again."""

    ref: str
    condition: str | None
    items: Any
    body: tuple[str, ...]
    """Reference names of the body's tasks, nested ones included."""
    limit: int = DEFAULT_MAX_ITERATIONS

    def start(self, task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        """The start stage's body: the first pass's output (iteration 1, the first item).
        An ``items`` loop over an empty list makes no pass (iteration 0), as in Conductor."""
        if self.items is None:
            return {"iteration": 1}
        items = self.resolved_items(ctx, task)
        if not items:
            return {"iteration": 0}
        return {"iteration": 1, "loopItem": items[0], "loopIndex": 0}

    def enters(self, ctx: dict[str, Any]) -> bool:
        """Whether the first pass runs (not for an empty ``items`` list)."""
        return bool(ctx["tasks"][self.ref]["output"].get("iteration"))

    def resolved_items(self, ctx: Mapping[str, Any], task: Task) -> list[Any]:
        document = {**ctx["tasks"], "workflow": {**ctx["workflow"], "workflowId": task.run_id}}
        items = resolve(self.items, document, task.id)
        return items if isinstance(items, list) else []

    def again(self, task: Task, inputs: Any, ctx: dict[str, Any]) -> bool:
        """After a pass: record it, and say whether the loop goes round again."""
        record = ctx["tasks"][self.ref]
        output = record["output"]
        done = int(output.get("iteration", 1))
        outputs = {ref: ctx["tasks"][ref]["output"] for ref in self.body if ref in ctx["tasks"]}
        output[str(done)] = outputs
        keep = inputs.get("keepLastN") if isinstance(inputs, Mapping) else None
        if isinstance(keep, int) and keep > 0:
            for old in range(1, done - keep + 1):
                output.pop(str(old), None)
        items = self.resolved_items(ctx, task) if self.items is not None else None
        more = items is None or done < len(items)
        if more and self.condition:
            scope = {**(inputs if isinstance(inputs, Mapping) else {}), **outputs,
                     self.ref: {**output, "iteration": done}}
            more = bool(run_javascript(self.condition, scope))
        if not more:
            return False
        if done >= self.limit:
            raise DeadLetter(f"DO_WHILE {self.ref!r} would start pass {done + 1}, over its "
                             f"limit of {self.limit} (load_workflow(max_iterations=...))")
        output["iteration"] = record["iteration"] = done + 1
        if items is not None:
            output.update(loopItem=items[done], loopIndex=done)
        return True
