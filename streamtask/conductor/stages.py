"""What the workflow compiler declares: one stage per :class:`Decl`, a task sequence as a
:class:`Part`, and the :class:`CaseSwitch` a SWITCH routes on.

The compiler (:mod:`streamtask.conductor.compiler`) collects every declaration (and every
problem) first; only a definition with no problem gets its stages declared on the app, in
the definition's order, by :meth:`Decl.declare`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streamtask.conductor.context import END, Body, Step, SwitchSpec
from streamtask.conductor.definitions import JOIN, SIMPLE, Where, passthrough
from streamtask.conductor.handlers import step_handler
from streamtask.model.app import App, Handler
from streamtask.model.pipeline import JoinSpec, Switch, Then
from streamtask.retry import NO_RETRIES, RetryPolicy
from streamtask.worker.ratelimit import RateLimit

TIMER = "timer"
"""The kind of a ``<task>_delay`` stage: holds a run for the task's ``startDelay``."""
SIGNAL = "signal"
"""The kind of a WAIT/HUMAN task's signal stage: passes signals on to its resume join."""


@dataclass(frozen=True)
class CaseSwitch(Switch):
    """A SWITCH/DECISION: routes on the case the stage in front of it chose (``ref``)."""

    ref: str = ""



@dataclass
class Decl:
    """A stage to declare: a task's (``kind`` task), a join, or a routing stage."""

    name: str
    kind: str
    position: Where
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
    make_app_body: Callable[[App], Body] | None = field(default=None, repr=False)
    """For a body that needs the app (EVENT publishes through its transport)."""
    compensate: str | None = None
    rate_limit: RateLimit | None = None
    handler: Handler | None = field(default=None, repr=False)
    """The stage's handler itself, for stages that are not a step around a body (timers)."""

    def declare(self, app: App, handlers: Mapping[str, Handler], partitions: int,
                switches: Mapping[str, SwitchSpec]) -> None:
        route = self.then if isinstance(self.then, CaseSwitch) else None
        step = replace(self.step, ends=self.then == END, route=route,
                       switch=switches[route.ref] if route is not None else None)
        body = self.make_body(handlers) if self.make_body is not None else \
            self.make_app_body(app) if self.make_app_body is not None else self.body
        handler = self.handler or (passthrough if self.kind == SIGNAL else step_handler(
            step, handlers.get(self.task_name) if self.kind == SIMPLE else None, body))
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
class Part:
    """A compiled task sequence: where tasks enter it (``entry``), the stage that ends it
    (``last``, if one does), and the first task with its position (``head``, ``at``), whose
    routing stage stands in where a single stage is needed but ``entry`` is a fork/switch."""

    entry: Then
    last: str | None = None
    head: Mapping[str, Any] | None = None
    at: Where = ()
