"""How a stage's result becomes the next tasks: chains, fan-out, forks and switches.

A stage declares where its results go with ``then=``: a stage name (a chain), a tuple of
names (a fork: every result goes to each branch), or a :class:`Switch` on a payload field.
What the handler returns decides how many tasks follow: ``None`` ends the run there, a list
fans out (one task per item), anything else is one task. A handler may also return
:class:`Send` items to pick the next stage itself. The mapping is a pure function, tested
without Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from streamtask.errors import ConfigurationError, RoutingError
from streamtask.kafka.headers import safe_str


@dataclass(frozen=True)
class Send:
    """Returned by a handler: send ``payload`` to ``stage`` (optionally with its own key)."""

    stage: str
    payload: Any
    key: str | None = None
    delay: float | None = None
    """Hold the task back this many seconds: it goes to the stage's shortest retry level at
    least that long, due then, so the retries' due-time machinery serves it (no partition
    sleeps). The stage must have such a level."""


@dataclass(frozen=True)
class Switch:
    """Route each result by the value of one payload field."""

    field: str
    cases: Mapping[Any, str]
    default: str | None = None

    def target(self, payload: Any) -> str:
        value = payload.get(self.field) if isinstance(payload, Mapping) else None
        try:
            chosen = self.cases.get(value)
        except TypeError:  # unhashable (a list or a dict): only its text can match a case
            chosen = None
        if chosen is None and value is not None:  # Conductor compares case values as text
            chosen = self.cases.get(safe_str(value))
        chosen = chosen or self.default
        if chosen is None:
            shown = safe_str(value, repr)[:200]
            raise RoutingError(f"no case for {self.field}={shown} and no default "
                               f"(cases: {sorted(map(str, self.cases))})")
        return chosen


Then = str | tuple[str, ...] | Switch | None

ON_TIMEOUT = ("dead-letter", "partial")


@dataclass(frozen=True)
class JoinSpec:
    """A join waits for every branch in ``branches`` (the last stage of each fork branch)."""

    branches: tuple[str, ...]
    timeout: float = 300.0
    on_timeout: str = "dead-letter"
    external: tuple[str, ...] = ()
    """Branches fed from outside the app's forks (e.g. a workflow's signals): no fork
    needs to lead to them."""

    def __post_init__(self) -> None:
        if len(self.branches) < 2 or len(set(self.branches)) != len(self.branches):
            raise ConfigurationError(
                f"a join needs two or more distinct branches, got {list(self.branches)}")
        if self.timeout <= 0:
            raise ConfigurationError(f"join timeout must be positive, got {self.timeout}")
        if self.on_timeout not in ON_TIMEOUT:
            raise ConfigurationError(
                f"on_timeout={self.on_timeout!r}: choose one of {', '.join(ON_TIMEOUT)}")


def merged(task: Any) -> Any:
    """A join handler that passes the branches' results on unchanged."""
    return task.payload


class NextTask(NamedTuple):
    stage: str
    payload: Any
    key: str | None = None
    delay: float | None = None


def targets_of(then: Then) -> list[str]:
    """Every stage ``then`` can send to (for validation and drawing)."""
    if then is None:
        return []
    if isinstance(then, str):
        return [then]
    if isinstance(then, Switch):
        names = list(dict.fromkeys(then.cases.values()))
        return names + ([then.default] if then.default and then.default not in names else [])
    return list(then)


def next_tasks(then: Then, result: Any) -> list[NextTask]:
    """The tasks a handler's ``result`` turns into under ``then``."""
    if result is None:
        return []
    items = result if isinstance(result, list | tuple) else [result]
    out: list[NextTask] = []
    for item in items:
        if isinstance(item, Send):
            out.append(NextTask(item.stage, item.payload, item.key, item.delay))
        elif isinstance(then, Switch):
            out.append(NextTask(then.target(item), item))
        elif isinstance(then, str):
            out.append(NextTask(then, item))
        elif isinstance(then, Sequence):
            out.extend(NextTask(branch, item) for branch in then)
    return out
