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
from dataclasses import dataclass, field
from typing import Any

from streamtask.errors import RoutingError


@dataclass(frozen=True)
class Send:
    """Returned by a handler: send ``payload`` to ``stage`` (optionally with its own key)."""

    stage: str
    payload: Any
    key: str | None = None


@dataclass(frozen=True)
class Switch:
    """Route each result by the value of one payload field."""

    field: str
    cases: Mapping[Any, str]
    default: str | None = None

    def target(self, payload: Any) -> str:
        value = payload.get(self.field) if isinstance(payload, Mapping) else None
        chosen = self.cases.get(value, self.default)
        if chosen is None:
            raise RoutingError(f"no case for {self.field}={value!r} and no default "
                               f"(cases: {sorted(map(str, self.cases))})")
        return chosen


Then = str | tuple[str, ...] | Switch | None


@dataclass(frozen=True)
class NextTask:
    stage: str
    payload: Any
    key: str | None = field(default=None)


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
            out.append(NextTask(item.stage, item.payload, item.key))
        elif isinstance(then, Switch):
            out.append(NextTask(then.target(item), item))
        elif isinstance(then, str):
            out.append(NextTask(then, item))
        elif isinstance(then, Sequence):
            out.extend(NextTask(branch, item) for branch in then)
    return out
