"""A test app for ``streamtask dlq``: stages that fail while their app is broken.

Each test builds its own app with :func:`build`, which also sets it as an attribute of this
module, so the CLI (run in-process with typer's CliRunner) loads it as
``tests.apps.dlq_app:<app name>``. While ``Faulty.broken`` is true every task raises the
error its payload names (``{"n": 1, "error": "KeyError"}``; ValueError by default) and, with
one attempt per stage, lands in the stage's DLQ at once. Every execution is recorded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamtask import App, Task
from streamtask.retry import RetryPolicy
from tests.inprocess import new_app, run_worker, send_all


class QuotaExceeded(Exception):
    """An error of this module, dead-lettered as ``tests.apps.dlq_app.QuotaExceeded``."""


ERRORS: dict[str, type[Exception]] = {"ValueError": ValueError, "KeyError": KeyError,
                                      "QuotaExceeded": QuotaExceeded}


@dataclass(frozen=True)
class Run:
    """One execution of a task."""

    stage: str
    task_id: str
    attempt: int
    payload: Any
    failed: bool


@dataclass
class Faulty:
    """A test's app, the switch that breaks it, and what its handlers ran."""

    app: App
    broken: bool = True
    runs: list[Run] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """The ``module:attribute`` reference the CLI loads the app with."""
        return f"{__name__}:{self.app.name}"

    def handle(self, stage: str, task: Task) -> None:
        self.runs.append(Run(stage, task.id, task.attempt, task.payload, self.broken))
        if self.broken:
            error = ERRORS[task.payload.get("error", "ValueError")]
            raise error(f"broken while handling n={task.payload.get('n')}")

    def succeeded(self, stage: str | None = None) -> list[Run]:
        return [r for r in self.runs if not r.failed and stage in (None, r.stage)]


def build(bootstrap: str, unique: str, stages: Sequence[str] = ("work",),
          partitions: int = 2) -> Faulty:
    """A new broken app named ``t<unique>`` with one-attempt stages, reachable by the CLI."""
    faulty = Faulty(new_app(bootstrap, unique))
    for name in stages:
        def handler(task: Task, _stage: str = name) -> None:
            faulty.handle(_stage, task)

        faulty.app.stage(name, partitions=partitions,
                         retry=RetryPolicy(max_attempts=1))(handler)
    setattr(sys.modules[__name__], faulty.app.name, faulty.app)
    return faulty


def fill(faulty: Faulty, stage: str, payloads: list[dict[str, Any]], queued: int = 0) -> None:
    """Send the tasks, then run a worker until they and the ``queued`` records already on
    the stage's topic ended (in the DLQ while the app is broken)."""
    send_all(faulty.app, stage, payloads)
    run_worker(faulty.app, [stage], max_tasks=len(payloads) + queued)
