"""Conductor task definitions (``TaskDef``): retries, timeouts and limits of a task's stage.

Where a task's settings come from, later ones winning: Conductor's defaults (3 retries,
FIXED, 60 s; none for system tasks, whose ad-hoc definitions have no retries), the
``task_defaults`` given to the loader, the ``taskDefs`` file's definition of the task's
name, the task's inline ``taskDefinition``, then the task's own ``retryCount``.

How each option maps (see the README's workflow section for the differences):

* ``retryCount``, ``retryLogic`` (FIXED, LINEAR_BACKOFF with ``backoffScaleFactor``,
  EXPONENTIAL_BACKOFF), ``retryDelaySeconds``, ``maxRetryDelaySeconds``: the stage's retry
  ladder, one delay per retry, exactly as Conductor computes them;
* ``timeoutSeconds`` and ``responseTimeoutSeconds``: the stage's timeout is the shorter of
  the two that are set (0 = none; Conductor's registration refuses a response timeout
  above the total, but inline definitions in its own fixtures have one, so it is
  accepted); ``timeoutPolicy`` ALERT_ONLY means no timeout, RETRY and TIME_OUT_WF both
  retry a timed-out task like a failed one;
* ``concurrentExecLimit``: the stage's concurrency in each worker process;
* ``rateLimitPerFrequency`` per ``rateLimitFrequencyInSeconds`` (default 1; 0 = no limit):
  the stage's :class:`~streamtask.worker.ratelimit.RateLimit`, shared by all its workers;
* ``inputTemplate``: defaults merged into the task's input;
* ``name``, ``description``, ``inputKeys``, ``outputKeys``, owners and timestamps: kept as
  documentation, as in Conductor.

Anything else that is set (poll timeouts, jitter, schemas) is reported as
unsupported rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamtask.errors import ConfigurationError
from streamtask.model.app import DEFAULT_TIMEOUT
from streamtask.retry import Backoff, RetryPolicy
from streamtask.worker.ratelimit import RateLimit

RETRY_LOGIC = ("FIXED", "EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF")
TIMEOUT_POLICIES = ("RETRY", "TIME_OUT_WF", "ALERT_ONLY")
CONDUCTOR_DEFAULTS: dict[str, Any] = {"retryCount": 3, "retryLogic": "FIXED",
                                      "retryDelaySeconds": 60, "backoffScaleFactor": 1}
SYSTEM_DEFAULTS: dict[str, Any] = {**CONDUCTOR_DEFAULTS, "retryCount": 0}
SUPPORTED = {"retryCount", "retryLogic", "retryDelaySeconds", "backoffScaleFactor",
             "maxRetryDelaySeconds", "timeoutSeconds", "responseTimeoutSeconds",
             "timeoutPolicy", "concurrentExecLimit", "inputTemplate", "rateLimitPerFrequency",
             "rateLimitFrequencyInSeconds"}
DOCUMENTATION = {"name", "description", "inputKeys", "outputKeys", "ownerEmail", "ownerApp",
                 "createTime", "updateTime", "createdBy", "updatedBy", "tags"}
MAX_RETRY_COUNT = 1000
"""Retries a task may have (Conductor's docs say 10, its code sets no bound); each retry
is one entry of the stage's ladder."""
TASK_LEVEL = {"retryCount", "retryLogic", "retryDelaySeconds", "timeoutSeconds"}
"""Options a workflow task may carry itself (``retryCount`` is Conductor's; the others are
accepted there for definitions written for earlier streamtask versions)."""


@dataclass(frozen=True)
class TaskSettings:
    """What a task definition sets for a stage."""

    retry: RetryPolicy
    timeout: float | None
    concurrency: int | None = None
    input_template: Mapping[str, Any] = field(default_factory=dict)
    rate_limit: RateLimit | None = None


def parse_task_defs(raw: Any) -> dict[str, dict[str, Any]]:
    """Task definitions by name from a ``taskDefs`` JSON value (a list, one object, or
    ``{"taskDefs": [...]}``); raises one ConfigurationError listing every bad entry."""
    if isinstance(raw, Mapping) and isinstance(raw.get("taskDefs"), list):
        raw = raw["taskDefs"]
    entries = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(entries, list):
        raise ConfigurationError("taskDefs must be a JSON list of task definitions")
    found: dict[str, dict[str, Any]] = {}
    problems = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            problems.append(f"entry {number} is not an object with a name")
        elif entry["name"] in found:
            problems.append(f"task {entry['name']!r} is defined twice")
        else:
            found[entry["name"]] = dict(entry)
    if problems:
        raise ConfigurationError("taskDefs: " + "; ".join(problems))
    return found


def unsupported_options(definition: Mapping[str, Any]) -> list[str]:
    """Options of a TaskDef that are set (not empty or off) but have no effect here."""
    ignored = SUPPORTED | DOCUMENTATION
    return sorted(key for key, value in definition.items()
                  if key not in ignored and value not in (None, False, 0, "", [], {}))


def settings(options: Mapping[str, Any], where: str, problems: list[str]) -> TaskSettings:
    """The stage settings of merged TaskDef ``options``; problems are appended, each
    prefixed with ``where``, and sane values used in their place."""
    count = _whole(options, "retryCount", where, problems, 0)
    if count > MAX_RETRY_COUNT:
        problems.append(f"{where}: retryCount {count} is over {MAX_RETRY_COUNT}; a task that "
                        "must outlast that many failures needs a longer delay, not more retries")
        count = MAX_RETRY_COUNT
    logic = options.get("retryLogic")
    if logic not in RETRY_LOGIC:
        problems.append(f"{where}: retryLogic {logic!r} is not one of {', '.join(RETRY_LOGIC)}")
        logic = "FIXED"
    delay = _number(options, "retryDelaySeconds", where, problems) or 0.0
    scale = _number(options, "backoffScaleFactor", where, problems) or 1.0
    cap = _number(options, "maxRetryDelaySeconds", where, problems)
    levels = [_delay(logic, delay, scale, k) for k in range(count)]
    levels = [min(d, cap) if cap else d for d in levels]
    retry = RetryPolicy(max_attempts=count + 1, backoff=Backoff.FIXED, delay=delay,
                        max_delay=max([delay, *levels]), levels=tuple(levels) or None)
    concurrency = _whole(options, "concurrentExecLimit", where, problems, None) or None
    template = options.get("inputTemplate") or {}
    if not isinstance(template, Mapping):
        problems.append(f"{where}: inputTemplate must be an object")
        template = {}
    return TaskSettings(retry, _timeout(options, where, problems), concurrency, template,
                        _rate_limit(options, where, problems))


def _rate_limit(options: Mapping[str, Any], where: str,
                problems: list[str]) -> RateLimit | None:
    """Conductor's ``rateLimitPerFrequency`` tasks per ``rateLimitFrequencyInSeconds``."""
    count = _whole(options, "rateLimitPerFrequency", where, problems, 0)
    seconds = _number(options, "rateLimitFrequencyInSeconds", where, problems) or 1.0
    return RateLimit(count, seconds) if count else None


def _delay(logic: str, delay: float, scale: float, k: int) -> float:
    """Conductor's delay before retry ``k + 1`` (k = the failed attempt's retryCount)."""
    if logic == "LINEAR_BACKOFF":
        return delay * scale * (k + 1)
    if logic == "EXPONENTIAL_BACKOFF":
        return delay * float(2 ** k)
    return delay


def _timeout(options: Mapping[str, Any], where: str, problems: list[str]) -> float | None:
    policy = options.get("timeoutPolicy", "TIME_OUT_WF")
    if policy not in TIMEOUT_POLICIES:
        problems.append(f"{where}: timeoutPolicy {policy!r} is not one of "
                        f"{', '.join(TIMEOUT_POLICIES)}")
    total = _number(options, "timeoutSeconds", where, problems)
    response = _number(options, "responseTimeoutSeconds", where, problems)
    if policy == "ALERT_ONLY":
        return None
    given = [t for t in (total, response) if t]
    if given:
        return min(given)
    return None if total == 0 and "timeoutSeconds" in options else DEFAULT_TIMEOUT


def _whole(options: Mapping[str, Any], key: str, where: str, problems: list[str],
           default: int | None) -> int:
    value = options.get(key, default)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(f"{where}: {key} must be a whole number >= 0, not {value!r}")
        return 0
    return value


def _number(options: Mapping[str, Any], key: str, where: str,
            problems: list[str]) -> float | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        problems.append(f"{where}: {key} must be a number >= 0, not {value!r}")
        return None
    return float(value)
