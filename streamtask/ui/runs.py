"""The Runs pages: runs found in the execution trail, and one run's tree and timeline.

Everything comes from :mod:`streamtask.ops.trail` (``<app>.events``): the list reads the trail
records written since a time (one record per run and flush) and folds them into one line per
run; a run's page reads that run's events (one partition, from the run's start) and draws
:func:`streamtask.ops.trail.tree` as a tree of tasks with a bar per attempt on a shared time axis.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streamtask.ops.trail import TaskTrail
from streamtask.ui.views import when

MAX_RUNS = 200
"""Runs listed at most (the newest first); narrow the search to see others."""


@dataclass
class RunLine:
    """One run as the list shows it."""

    run_id: str
    started: int
    ended: int
    stages: list[str] = field(default_factory=list)
    tasks: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def view(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "started": when(self.started),
                "took_ms": self.ended - self.started, "stages": self.stages,
                "tasks": len(self.tasks), "outcomes": dict(self.outcomes),
                "dead": self.outcomes["dead_lettered"] > 0}


def run_lines(records: list[dict[str, Any]], stage: str | None = None,
              outcome: str | None = None) -> tuple[list[RunLine], int]:
    """The runs of the trail records (newest first, at most :data:`MAX_RUNS`) that touched
    ``stage`` and had an event with ``outcome``; and how many matched in all. A record holds
    one worker's events of one flush, of any number of runs."""
    runs: dict[str, RunLine] = {}
    for record in records:
        for event in record["events"]:
            run_id = event["run_id"]
            line = runs.setdefault(run_id, RunLine(run_id, event["started"], event["ended"]))
            line.started = min(line.started, event["started"])
            line.ended = max(line.ended, event["ended"])
            if event["stage"] not in line.stages:
                line.stages.append(event["stage"])
            line.tasks.add(event["task_id"] or "-")
            line.outcomes[event["outcome"]] += 1
    matched = [line for line in runs.values()
               if (stage is None or stage in line.stages)
               and (outcome is None or line.outcomes[outcome] > 0)]
    matched.sort(key=lambda line: line.started, reverse=True)
    return matched[:MAX_RUNS], len(matched)


def _walk(tasks: list[TaskTrail], depth: int = 0) -> Iterator[tuple[int, TaskTrail]]:
    for task in sorted(tasks, key=lambda t: min((a.started for a in t.attempts), default=0)):
        yield depth, task
        yield from _walk(task.children, depth + 1)


def timeline(roots: list[TaskTrail]) -> dict[str, Any]:
    """The run's tasks in tree order, each with its attempts placed on the run's time axis
    (``left`` and ``width`` in percent of the run's span)."""
    walked = list(_walk(roots))
    times = [t for _, task in walked for a in task.attempts for t in (a.started, a.ended)]
    start, end = (min(times), max(times)) if times else (0, 0)
    span = max(end - start, 1)
    rows = []
    for depth, task in walked:
        bars = [{"attempt": a.attempt, "outcome": a.outcome, "error": a.error or "",
                 "worker": a.worker, "started": when(a.started), "took_ms": a.ended - a.started,
                 "left": round(100 * (a.started - start) / span, 2),
                 "width": max(0.4, round(100 * (a.ended - a.started) / span, 2))}
                for a in task.attempts]
        rows.append({"depth": depth, "task_id": task.task_id, "stage": task.stage,
                     "parent_id": task.parent_id, "attempts": bars,
                     "dead_letter": task.dead_letter})
    return {"rows": rows, "started": when(start) if times else "-", "took_ms": end - start}
