"""A test app for ``streamtask status``, metrics and alerts: a stage that can be made to hang.

:func:`build` registers each test's app as an attribute of this module, so the CLI loads it
as ``tests.apps.observed_app:<app name>``. A task whose payload says ``{"hang": true}``
blocks its handler until the test opens ``Observed.gate``; ``{"fail": "ValueError"}`` raises.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from streamtask import App, Task
from streamtask.kafka.topics import ensure
from streamtask.retry import RetryPolicy
from tests.inprocess import new_app


@dataclass
class Observed:
    app: App
    gate: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    """Set once a handler started waiting at the gate."""
    done: list[Any] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{__name__}:{self.app.name}"

    def handle(self, task: Task) -> Any:
        if task.payload.get("hang"):
            self.hanging.set()
            self.gate.wait(120)
        if task.payload.get("fail"):
            raise ValueError(f"failing n={task.payload.get('n')}")
        self.done.append(task.payload)
        return None


def build(bootstrap: str, unique: str, *, partitions: int = 1,
          retry: RetryPolicy | None = None, timeout: float | None = None) -> Observed:
    """A new app ``t<unique>`` with one stage ``work``, reachable by the CLI."""
    observed = Observed(new_app(bootstrap, unique))
    observed.app.stage("work", partitions=partitions, timeout=timeout,
                       retry=retry or RetryPolicy(max_attempts=1))(observed.handle)
    setattr(sys.modules[__name__], observed.app.name, observed.app)
    return observed


def build_stuck(bootstrap: str, unique: str, behind: int) -> Observed:
    """:func:`build` with one partition, its topics created and ``behind + 1`` tasks sent:
    a hanging one first, so a worker (concurrency 1) sticks on it with ``behind`` behind."""
    observed = build(bootstrap, unique, partitions=1)
    ensure(observed.app)
    with observed.app.producer() as producer:
        producer.send("work", {"n": 0, "hang": True})
        producer.send_many("work", [{"n": n} for n in range(1, behind + 1)])
    return observed
