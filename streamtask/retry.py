"""Retry policies as plain data, and the pure decision of what happens after a failure.

A failed task never blocks its partition: it is produced to a *retry level*, a topic with
one fixed delay (``photos.resize.retry.5s``), and its offset moves on. When its attempts are
spent, or the error is fatal, it goes to the stage's dead-letter topic instead. The ladder
of delays follows Conductor's vocabulary (``retryCount``, ``retryLogic``,
``retryDelaySeconds``). :func:`decide` is a pure function of (attempt, error, policy, now),
tested from a table with no Kafka involved.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from streamtask.errors import ConfigurationError, DecodeError, PayloadSchemaError, RoutingError
from streamtask.kafka.headers import safe_str

DAY = 86_400.0


class Backoff(StrEnum):
    FIXED = "FIXED"
    LINEAR = "LINEAR"
    EXPONENTIAL = "EXPONENTIAL"


class Retry(Exception):
    """Raised by a handler to ask for another attempt after ``delay`` seconds."""

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay


class DeadLetter(Exception):
    """Raised by a handler to send its task straight to the dead-letter queue."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


FATAL_BY_DEFAULT: tuple[type[BaseException], ...] = (
    DecodeError, PayloadSchemaError, RoutingError, TypeError, AttributeError,
    NotImplementedError)
"""Programming and data errors another attempt cannot fix (like Spring's fatal list)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a stage retries. ``max_attempts`` counts every execution, the first included."""

    max_attempts: int = 3
    backoff: Backoff = Backoff.EXPONENTIAL
    delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.0
    """Up to this fraction of the delay is added at random (the level topic stays the same)."""
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    fatal: tuple[type[BaseException], ...] = FATAL_BY_DEFAULT
    levels: tuple[float, ...] | None = None
    """Explicit delays per retry (seconds); else derived from backoff, delay and max_delay."""
    retention: float | None = None
    """Retention of the retry topics (seconds); default: max(7 days, 10x the longest delay)."""

    @classmethod
    def conductor(cls, retry_count: int = 3, retry_logic: str = "FIXED",
                  retry_delay_seconds: float = 60.0) -> RetryPolicy:
        """Conductor's task options: ``retryCount`` retries after the first execution."""
        return cls(max_attempts=retry_count + 1, backoff=Backoff(retry_logic.replace(
            "EXPONENTIAL_BACKOFF", "EXPONENTIAL").replace("LINEAR_BACKOFF", "LINEAR")),
            delay=retry_delay_seconds, max_delay=max(retry_delay_seconds, 3600.0))

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigurationError("invalid retry policy: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Everything wrong with the policy, each with how to fix it."""
        found = []
        if self.max_attempts < 1:
            found.append(f"max_attempts={self.max_attempts} must be at least 1")
        if self.delay < 0 or self.max_delay < 0 or any(d < 0 for d in self.levels or ()):
            found.append("delays must be zero or more seconds")
        if not 0 <= self.jitter <= 1:
            found.append(f"jitter={self.jitter} must be a fraction between 0 and 1")
        if self.levels is not None and len(self.levels) > max(self.max_attempts - 1, 0):
            found.append(f"{len(self.levels)} retry levels but only {self.max_attempts - 1} "
                         "retries (max_attempts - 1): drop levels or raise max_attempts")
        if self.retention is not None and self.retry_delays() and \
                self.retention <= max(self.retry_delays()) * (1 + self.jitter):
            found.append(f"retention {self.retention:g}s is not longer than the longest delay "
                         f"{max(self.retry_delays()):g}s: retried tasks would expire unseen")
        return found

    def retry_delays(self) -> list[float]:
        """The delay before retry n (n = 1 .. max_attempts - 1), in seconds."""
        return list(self.delays_per_retry)

    @cached_property
    def delays_per_retry(self) -> tuple[float, ...]:
        """Cached: read on every failure."""
        return tuple(self._compute_delays())

    @cached_property
    def levels_ascending(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.delays_per_retry)))

    def _compute_delays(self) -> list[float]:
        retries = max(self.max_attempts - 1, 0)
        if self.levels is not None:
            levels = list(self.levels)
            return (levels + [levels[-1]] * retries)[:retries] if levels else []
        base = self.delay
        if self.backoff is Backoff.FIXED:
            raw = [base] * retries
        elif self.backoff is Backoff.LINEAR:
            raw = [base * n for n in range(1, retries + 1)]
        else:
            raw = [base * 2 ** (n - 1) for n in range(1, retries + 1)]
        return [min(d, self.max_delay) for d in raw]

    def ladder(self) -> list[float]:
        """The distinct delays, ascending: one retry topic each."""
        return list(self.levels_ascending)

    def topic_retention(self) -> float:
        longest = max(self.ladder(), default=0.0)
        return self.retention if self.retention is not None else max(7 * DAY, 10 * longest)


NO_RETRIES = RetryPolicy(max_attempts=1)


def level_name(delay: float) -> str:
    """The suffix naming a retry level by its delay: 500ms, 5s, 2m, 1h, 1d, 90s."""
    ms = round(delay * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class RetryLater:
    """Produce the task to the retry level ``delay`` (a ladder entry), due at ``due`` (ms)."""

    level: float
    due: int
    attempt: int
    """The attempt number the retry will run as."""


@dataclass(frozen=True)
class DeadLettered:
    """Send the task to the dead-letter queue."""

    reason: str
    """fatal | exhausted | not-retryable | requested | poison"""
    detail: str = field(default="")


Decision = RetryLater | DeadLettered


def decide(attempt: int, error: BaseException, policy: RetryPolicy, now_ms: int,
           rng: random.Random | None = None) -> Decision:
    """What to do after execution ``attempt`` (1-based) failed with ``error``."""
    if isinstance(error, DeadLetter):
        return DeadLettered("requested", safe_str(error))
    if isinstance(error, policy.fatal) and not isinstance(error, Retry):
        return DeadLettered("fatal", f"{type(error).__name__} is fatal for this stage")
    if not isinstance(error, (Retry, *policy.retry_on)):
        return DeadLettered("not-retryable", f"{type(error).__name__} is not in retry_on")
    delays = policy.delays_per_retry
    if attempt > len(delays):
        return DeadLettered("exhausted", f"gave up after {attempt} attempt(s)")
    wanted = delays[attempt - 1]
    ladder = policy.levels_ascending
    if isinstance(error, Retry) and error.delay is not None:
        # A level is a FIFO topic: a record due later than its level's delay would hold
        # every record behind it, so a longer wish waits the longest level's delay.
        wanted = min(max(0.0, error.delay), ladder[-1])
    level = next((d for d in ladder if d >= wanted), ladder[-1])
    extra = (rng or random).uniform(0, policy.jitter * wanted) if policy.jitter else 0.0
    return RetryLater(level, now_ms + round((wanted + extra) * 1000), attempt + 1)
