"""Timers of a workflow run: a task's ``startDelay``, and a WAIT ``until`` a time or for a
``duration`` known only when the run gets there.

There is no second timer here: a timer is a task held back on its stage's retry levels
(:attr:`~streamtask.model.pipeline.Send.delay`), which the worker releases when due, as it
releases retries. A timer stage has the levels :data:`LEVELS`; a wait longer than the
longest hops again from where it lands, and each hop takes the longest level that does not
overshoot, due exactly one level later, so the records of a level stay in due-time order
and none is held behind a later one (a hop below the shortest level may be up to that level,
one second, late). A 45-day wait is about 50 hops, each a few kilobytes produced once.

* ``startDelay`` (seconds): a stage ``<task>_delay`` in front of the task holds the run's
  context until the delay has passed since it arrived there, then passes it on.
* WAIT ``until`` / a ``duration`` given by an expression: the WAIT's park stage resolves its
  input, works out when the wait ends, and sends its signal stage a timer due then; the timer
  reaches the resume join as a signal with empty output (a real signal before it wins, as in
  Conductor, and the late timer is dropped as a late branch).

``until`` takes Conductor's formats: ``yyyy-MM-dd HH:mm``, ``yyyy-MM-dd HH:mm <zone>`` or
``yyyy-MM-dd``. **Difference:** without a zone the time is UTC (Conductor takes its server's
zone). A zone is ``UTC``/``GMT``/``Z``, an offset (``+02:00``, ``GMT+2``, ``-0500``) or an
IANA name (``Europe/Paris``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streamtask import clock
from streamtask.errors import ConfigurationError
from streamtask.model.app import Handler
from streamtask.model.envelope import Task
from streamtask.model.pipeline import Send
from streamtask.retry import Backoff, RetryPolicy

LEVELS = (1.0, 10.0, 60.0, 600.0, 3600.0, 21_600.0, 86_400.0)
"""The delays (seconds) a timer stage hops on: one retry topic each."""
TIMER_POLICY = RetryPolicy(max_attempts=len(LEVELS) + 1, backoff=Backoff.FIXED,
                           delay=LEVELS[0], max_delay=LEVELS[-1], levels=LEVELS)
"""A timer stage's retry policy: its levels are the hops (its body does not fail)."""
DUE = "timerDueAt"
"""The payload key of a held context: when its timer is due (epoch ms)."""
_UNTIL = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?: (\d{1,2}):(\d{2})(?: (\S+))?)?$")
_OFFSET = re.compile(r"^(?:GMT|UTC)?([+-])(\d{1,2})(?::?(\d{2}))?$")


def hop(remaining: float) -> float:
    """The delay of the next hop towards a time ``remaining`` seconds away."""
    fitting = [level for level in LEVELS if level <= remaining]
    return fitting[-1] if fitting else max(remaining, 0.0)


def hold(stage: str, payload: dict[str, Any], due_ms: int) -> Send | dict[str, Any]:
    """``payload`` again to ``stage`` towards ``due_ms`` (its due time kept in it), or,
    once due, the payload without it."""
    remaining = (due_ms - clock.now_ms()) / 1000
    if remaining <= 0:
        payload.pop(DUE, None)
        return payload
    return Send(stage, {**payload, DUE: due_ms}, delay=hop(remaining))


def start_delay(stage: str, seconds: float) -> Handler:
    """The handler of ``<task>_delay``: the run's context goes on ``seconds`` after it first
    arrived here (a retried hop keeps its due time, carried in the payload)."""
    def run(task: Task) -> Any:
        payload = dict(task.payload) if isinstance(task.payload, Mapping) else \
            {"input": task.payload}
        due = payload.get(DUE)
        if not isinstance(due, int):
            due = clock.now_ms() + round(seconds * 1000)
        return hold(stage, payload, due)
    return run


def parse_until(text: str) -> int:
    """Epoch ms of a Conductor ``until``: ``2026-12-24 18:00``, ``... CET`` or a date."""
    found = _UNTIL.match(text.strip())
    if found is None:
        raise ConfigurationError(f"until {text!r} is not like 'yyyy-MM-dd HH:mm', "
                                 "'yyyy-MM-dd HH:mm <zone>' or 'yyyy-MM-dd'")
    year, month, day, hour, minute, zone = found.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                          tzinfo=_zone(zone, text))
    except ValueError as exc:
        raise ConfigurationError(f"until {text!r} is not a real date and time: {exc}") from exc
    return int(moment.timestamp() * 1000)


def _zone(name: str | None, text: str) -> tzinfo:
    if name is None or name.upper() in ("UTC", "GMT", "Z"):
        return UTC
    offset = _OFFSET.match(name.upper())
    if offset is not None:
        sign, hours, minutes = offset.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"until {text!r}: unknown zone {name!r} (give UTC, an offset "
                                 "such as +02:00, or a name such as Europe/Paris)") from exc
