"""WAIT and HUMAN: a run that pauses until a signal, a duration, or its deadline.

Neither holds a worker, a thread or a partition while it waits. A WAIT or HUMAN task ``w``
compiles to three stages and reuses the join machinery, whose state lives in a compacted
changelog topic and so survives restarts and rebalances:

* ``w`` parks the run: it passes the run's context to the join ``w_resume``;
* ``w_signal`` receives signals (``streamtask signal``, :meth:`WorkflowApp.signal
  <streamtask.model.workflow.WorkflowApp.signal>`), keyed by run id, and passes them to the join;
* ``w_resume`` waits for both, per run, then records the task with the signal's output
  (COMPLETED, or the run is dead-lettered on FAILED) and the run goes on.

A WAIT with a ``duration`` goes on without a signal once the duration has passed (the
join's timeout runs it on the parked context alone); a signal ends it early, as in
Conductor. A WAIT without one, and a HUMAN task, wait for a signal until the task's
deadline (its task definition's ``timeoutSeconds``, else :data:`DEFAULT_DEADLINE`), when the
run is dead-lettered with "join ... timed out". A signal for a run that is not waiting is
dead-lettered too (at the deadline, or at once when the task has a duration).

A WAIT ``until`` a time, or for a ``duration`` given by an expression, is timed when the
run reaches it (:func:`timed_park`): the park stage resolves the task's input and sends the
signal stage a timer (:mod:`streamtask.conductor.timers`) that becomes a signal once due.
An input that resolves to nothing, or to something that is not a time, dead-letters the run
there with the reason; so does a time past the task's deadline, which would end the wait
first.

Signals are keyed by run id, so a waiting task inside a FORK_JOIN branch (whose results
are keyed by the fork) is not supported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from streamtask import clock
from streamtask.conductor.context import Body, Step
from streamtask.conductor.timers import DUE, hold, parse_until
from streamtask.errors import ConfigurationError
from streamtask.model.app import Handler
from streamtask.model.envelope import Task
from streamtask.model.pipeline import Send
from streamtask.retry import DeadLetter

DEFAULT_DEADLINE = 30 * 86_400.0
"""Seconds a WAIT or HUMAN task without a deadline of its own waits for its signal."""
SIGNAL_STATUSES = ("COMPLETED", "FAILED")
_UNITS = {"d": 86_400, "day": 86_400, "days": 86_400,
          "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
          "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
          "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1}
_PART = re.compile(r"\s*(\d+)\s*([a-z]+)")


def parse_duration(text: str) -> float:
    """Seconds in a Conductor duration: ``"2d 3h"``, ``"90 seconds"``, ``"1m30s"``."""
    position, total, units = 0, 0, []
    text = text.strip().lower()
    while position < len(text):
        match = _PART.match(text, position)
        if match is None or match.group(2) not in _UNITS:
            raise ConfigurationError(f"duration {text!r} is not like '2d 3h 10m 5s' (days, "
                                     "hours, minutes, seconds, in that order)")
        units.append(_UNITS[match.group(2)])
        total += int(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not units or units != sorted(units, reverse=True) or len(set(units)) != len(units):
        raise ConfigurationError(f"duration {text!r} is not like '2d 3h 10m 5s' (days, "
                                 "hours, minutes, seconds, in that order)")
    return float(total)


def signal_payload(output: Mapping[str, Any], status: str = "COMPLETED",
                   reason: str | None = None) -> dict[str, Any]:
    """What a signal carries to a waiting task."""
    if status not in SIGNAL_STATUSES:
        raise ConfigurationError(f"signal status {status!r}: give one of "
                                 f"{', '.join(SIGNAL_STATUSES)}")
    return {"signal": {"output": dict(output), "status": status, "reason": reason}}


def resume(ref: str, has_duration: bool) -> Body:
    """The resume join's body: the task's output is the signal's (``{}`` after a WAIT's
    duration ran out)."""
    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        sent = ctx.pop("signal", None)
        if sent is None:
            if not has_duration:
                raise DeadLetter(f"{ref!r} resumed without a signal")
            return {}
        if sent.get("status") == "FAILED":
            raise DeadLetter(f"{ref!r} was signalled FAILED: {sent.get('reason') or 'no reason'}")
        output = sent.get("output")
        return dict(output) if isinstance(output, Mapping) else {}
    return run


def completion(ref: str) -> Body:
    """The resume join's body after an ``asyncComplete`` task: the task's own output merged
    with the signal's (Conductor merges an external update into the task's output)."""
    signalled = resume(ref, has_duration=False)

    def run(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
        earlier = ctx["tasks"].get(ref, {}).get("output")
        return {**(earlier if isinstance(earlier, Mapping) else {}),
                **signalled(task, inputs, ctx)}
    return run


def timed_park(step: Step, resume_stage: str, signal_stage: str, deadline: float) -> Handler:
    """The park stage of a timed WAIT: the run's context to the resume join, and a timer to
    the signal stage, due when the wait ends (see the module docstring)."""
    def run(task: Task) -> Any:
        ctx, inputs = step.begin(task)
        due = ends_at(step.ref, step.inputs, inputs)
        if due - clock.now_ms() > deadline * 1000:
            raise DeadLetter(f"WAIT {step.ref!r} would end after its deadline of {deadline:g}s "
                             "(its task definition's timeoutSeconds, else 30 days)")
        parked = step.finish(task, ctx, inputs, {})
        timer = hold(signal_stage, signal_payload({}), due)
        return [Send(resume_stage, parked),
                timer if isinstance(timer, Send) else Send(signal_stage, timer)]
    return run


def ends_at(ref: str, template: Any, inputs: Any) -> int:
    """When a timed WAIT ends (epoch ms), from its resolved ``until`` or ``duration``."""
    given = {key: inputs.get(key) for key in ("until", "duration")
             if isinstance(inputs, Mapping) and inputs.get(key) not in (None, "")}
    if len(given) != 1:
        shown = {key: template.get(key) for key in ("until", "duration")
                 if isinstance(template, Mapping) and key in template}
        found = "both" if given else "nothing"
        raise DeadLetter(f"WAIT {ref!r}: {shown} resolved to {found}; it needs one of until "
                         "or duration")
    (key, value), = given.items()
    try:
        if not isinstance(value, str):
            raise ConfigurationError(f"{key} must be text, not {value!r}")
        if key == "until":
            return parse_until(value)
        return clock.now_ms() + round(parse_duration(value) * 1000)
    except ConfigurationError as exc:
        raise DeadLetter(f"WAIT {ref!r}: {exc}") from exc


def timed_signals(stage: str) -> Handler:
    """The signal stage of a timed WAIT: signals pass on to the resume join, a timer hops on
    its stage's levels until due, then passes on as a signal with empty output."""
    def run(task: Task) -> Any:
        payload = task.payload
        if isinstance(payload, Mapping) and isinstance(payload.get(DUE), int):
            return hold(stage, dict(payload), payload[DUE])
        return payload
    return run
