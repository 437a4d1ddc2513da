"""The token buckets behind per-stage rate limits, on a fake clock: a worker meters its
partitions' share of the limit, waiting tasks keep their order, and a re-split applies at
once (no Kafka)."""

from __future__ import annotations

import pytest

from streamtask.errors import ConfigurationError
from streamtask.worker.ratelimit import RateLimit, StageLimits, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def starts_over(bucket: TokenBucket, clock: Clock, seconds: float, step: float = 0.01) -> int:
    taken = 0
    for _ in range(round(seconds / step)):
        clock.now += step
        while bucket.take():
            taken += 1
    return taken


@pytest.mark.parametrize(("held", "total"), [(6, 6), (3, 6), (2, 6), (1, 6)])
def test_a_bucket_meters_its_share_of_the_limit(held: int, total: int) -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(60, per=1.0), clock)
    bucket.reshare(held / total)
    taken = starts_over(bucket, clock, 100.0)
    expected = 60 * 100 * held / total
    assert abs(taken - expected) <= 1 + 60 * held / total  # the first token and one window


def test_the_shares_of_all_workers_add_up_to_the_limit() -> None:
    clock = Clock()
    buckets = [TokenBucket(RateLimit(50), clock) for _ in range(3)]
    for bucket, held in zip(buckets, (1, 2, 3), strict=True):
        bucket.reshare(held / 6)
    taken = 0
    for _ in range(6000):
        clock.now += 0.01
        for bucket in buckets:
            while bucket.take():
                taken += 1
    assert abs(taken - 50 * 60) <= 3 + 50  # 60 s at 50/s, give or take the first tokens


def test_a_worker_with_no_partition_starts_nothing_after_its_first_token() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(100), clock)
    bucket.reshare(0.0)
    assert starts_over(bucket, clock, 10.0) <= 1


def test_an_idle_bucket_bursts_at_most_one_window_of_its_share() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(10, per=2.0), clock)
    bucket.reshare(0.5)
    clock.now += 3600
    burst = 0
    while bucket.take():
        burst += 1
    assert burst == 5


def test_waiting_jobs_keep_their_order_and_a_reshare_applies_at_once() -> None:
    clock = Clock()
    limits: StageLimits[int] = StageLimits({"s": (RateLimit(10), ("app.s",), 4)}, clock)
    limits.reshare([("app.s", 0), ("app.s", 1), ("app.other", 0)])  # half the partitions
    assert limits.share("s") == 0.5
    assert not limits.defer("s", 0)  # the first token
    assert all(limits.defer("s", n) for n in range(1, 6))
    assert not limits.defer("unlimited", 99)
    clock.now += 0.2  # 5/s: one token
    assert list(limits.release()) == [1]
    limits.reshare([("app.s", p) for p in range(4)])  # the whole stage now: 10/s
    clock.now += 0.2
    assert list(limits.release()) == [2, 3]
    assert limits.drop(lambda job: job == 5) == [5]
    clock.now += 10
    assert list(limits.release()) == [4]


def test_retry_partitions_count_and_actual_partition_counts_win() -> None:
    clock = Clock()
    limits: StageLimits[int] = StageLimits(
        {"s": (RateLimit(10), ("app.s", "app.s.retry.1s"), 3)}, clock)
    limits.reshare([("app.s.retry.1s", 0)])  # only a retry partition: still a share
    assert limits.share("s") == 1 / 6
    limits.sized({"app.s": 9, "app.s.retry.1s": 3, "unrelated": 50})
    limits.reshare([("app.s", p) for p in range(6)])
    assert limits.share("s") == 6 / 12


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        RateLimit(0)
    with pytest.raises(ConfigurationError):
        RateLimit(5, per=0)
