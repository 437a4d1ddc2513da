"""The retry decision is a pure function of (attempt, error, policy, now): a table."""

from __future__ import annotations

import random

import pytest

from streamtask.errors import ConfigurationError, DecodeError
from streamtask.retry import (
    Backoff,
    DeadLetter,
    DeadLettered,
    Retry,
    RetryLater,
    RetryPolicy,
    decide,
    level_name,
)

EXP = RetryPolicy(max_attempts=4, backoff=Backoff.EXPONENTIAL, delay=5, max_delay=15)
NOW = 1_000_000


@pytest.mark.parametrize(("attempt", "error", "policy", "expected"), [
    (1, RuntimeError("x"), EXP, RetryLater(5, NOW + 5000, 2)),
    (2, RuntimeError("x"), EXP, RetryLater(10, NOW + 10_000, 3)),
    (3, RuntimeError("x"), EXP, RetryLater(15, NOW + 15_000, 4)),  # 20 s capped at 15
    (4, RuntimeError("x"), EXP, DeadLettered("exhausted", "gave up after 4 attempt(s)")),
    (1, DecodeError("x"), EXP, DeadLettered("fatal", "DecodeError is fatal for this stage")),
    (1, TypeError("x"), EXP, DeadLettered("fatal", "TypeError is fatal for this stage")),
    (1, DeadLetter("bad card"), EXP, DeadLettered("requested", "bad card")),
    (1, Retry(delay=7), EXP, RetryLater(10, NOW + 7000, 2)),  # smallest level >= 7 s
    # Beyond the longest level: capped to it. Its own due would hold the level's FIFO topic
    # (and every record behind it) for the whole wait.
    (1, Retry(delay=60), EXP, RetryLater(15, NOW + 15_000, 2)),
    (4, Retry(delay=1), EXP, DeadLettered("exhausted", "gave up after 4 attempt(s)")),
    (1, KeyError("k"), RetryPolicy(retry_on=(ConnectionError,)),
     DeadLettered("not-retryable", "KeyError is not in retry_on")),
    (1, ConnectionError(), RetryPolicy(backoff=Backoff.FIXED, delay=2),
     RetryLater(2, NOW + 2000, 2)),
    (2, ConnectionError(), RetryPolicy(max_attempts=4, backoff=Backoff.LINEAR, delay=2),
     RetryLater(4, NOW + 4000, 3)),
    (1, RuntimeError("x"), RetryPolicy(max_attempts=1), DeadLettered(
        "exhausted", "gave up after 1 attempt(s)")),
    (2, RuntimeError("x"), RetryPolicy(max_attempts=3, levels=(1, 60)),
     RetryLater(60, NOW + 60_000, 3)),
])
def test_decision_table(attempt, error, policy, expected) -> None:
    assert decide(attempt, error, policy, NOW) == expected


def test_jitter_adds_at_most_its_fraction_and_keeps_the_level() -> None:
    policy = RetryPolicy(backoff=Backoff.FIXED, delay=10, jitter=0.5)
    rng = random.Random(7)
    for _ in range(100):
        decision = decide(1, RuntimeError(), policy, NOW, rng)
        assert isinstance(decision, RetryLater) and decision.level == 10
        assert NOW + 10_000 <= decision.due <= NOW + 15_000


def test_conductor_vocabulary() -> None:
    policy = RetryPolicy.conductor(retry_count=3, retry_logic="EXPONENTIAL_BACKOFF",
                                   retry_delay_seconds=2)
    assert policy.max_attempts == 4 and policy.retry_delays() == [2, 4, 8]


@pytest.mark.parametrize(("options", "message"), [
    ({"delay": -1}, "zero or more"),
    ({"max_attempts": 0}, "at least 1"),
    ({"max_attempts": 2, "levels": (1, 2)}, "2 retry levels but only 1 retries"),
    ({"delay": 60, "retention": 30}, "not longer than the longest delay"),
    ({"jitter": 2}, "fraction"),
])
def test_impossible_policies_are_rejected_when_declared(options, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RetryPolicy(**options)


@pytest.mark.parametrize(("delay", "name"), [
    (0.2, "200ms"), (1, "1s"), (5, "5s"), (30, "30s"), (90, "90s"), (300, "5m"),
    (3600, "1h"), (86400, "1d"), (1.5, "1500ms")])
def test_level_names(delay, name) -> None:
    assert level_name(delay) == name
