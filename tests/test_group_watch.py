"""The liveness watches' decisions, with no Kafka: a consumer out of its group for longer than
the bound is stuck only while the cluster answers (during an outage the bound starts again);
one that gave no record for longer than the bound is stuck only while records wait for it."""

from __future__ import annotations

from streamtask.worker.liveness import CHECK_EVERY, DeliveryWatch, FetchWatch, GroupWatch


class Consumer:
    def __init__(self) -> None:
        self.member: str | None = "m-1"

    def memberid(self) -> str | None:
        return self.member


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watch(cluster_answers: list[bool]) -> tuple[GroupWatch, Clock]:
    clock = Clock()
    return GroupWatch(10.0, probe=lambda _c: cluster_answers[-1], clock=clock), clock


def test_a_member_is_never_stuck() -> None:
    group, clock = watch([True])
    consumer = Consumer()
    for _ in range(100):
        clock.now += CHECK_EVERY
        assert group.stuck([consumer]) == []


def test_out_of_the_group_past_the_bound_while_the_cluster_answers_is_stuck() -> None:
    group, clock = watch([True])
    consumer = Consumer()
    consumer.member = None
    assert group.stuck([consumer]) == []
    clock.now = 9.5
    assert group.stuck([consumer]) == []
    clock.now = 10.5
    assert group.stuck([consumer]) == [(consumer, 10.5)]


def test_rejoining_in_time_resets_the_bound() -> None:
    group, clock = watch([True])
    consumer = Consumer()
    consumer.member = None
    group.stuck([consumer])
    clock.now = 8.0
    consumer.member = "m-2"
    assert group.stuck([consumer]) == []
    consumer.member = None
    clock.now = 12.0
    assert group.stuck([consumer]) == []  # out for 0 s: counted from now
    clock.now = 22.5
    assert group.stuck([consumer]) == [(consumer, 10.5)]


def test_an_outage_is_not_a_stuck_consumer_and_restarts_the_bound() -> None:
    answers = [False]
    group, clock = watch(answers)
    consumer = Consumer()
    consumer.member = None
    group.stuck([consumer])
    clock.now = 30.0  # the broker is down: the probe gets no answer
    assert group.stuck([consumer]) == []
    answers.append(True)  # the broker is back
    clock.now = 35.0
    assert group.stuck([consumer]) == []  # 5 s since the cluster last failed to answer
    clock.now = 40.5
    assert group.stuck([consumer]) == [(consumer, 10.5)]


def test_looks_at_most_once_a_check_interval() -> None:
    probes: list[object] = []
    clock = Clock()
    group = GroupWatch(1.0, probe=lambda c: probes.append(c) is None, clock=clock)
    consumer = Consumer()
    consumer.member = None
    group.stuck([consumer])
    clock.now = 1.5
    assert group.stuck([consumer])
    assert not group.stuck([consumer])  # same instant: no second look
    assert len(probes) == 1


def fetch_watch(waiting: list[bool]) -> tuple[FetchWatch, Clock]:
    clock = Clock()
    return FetchWatch(10.0, probe=lambda _c: True, waiting=lambda _c, _p: waiting[-1],
                      clock=clock), clock


def test_quiet_past_the_bound_while_records_wait_is_stuck() -> None:
    group, clock = fetch_watch([True])
    consumer = Consumer()
    assert group.stuck([(consumer, ["tp"])]) == []
    clock.now = 10.5
    assert group.stuck([(consumer, ["tp"])]) == [(consumer, 10.5)]


def test_a_consumer_that_gives_records_or_is_not_expected_to_is_never_stuck() -> None:
    group, clock = fetch_watch([True])
    consumer = Consumer()
    for _ in range(30):
        clock.now += CHECK_EVERY
        group.heard(consumer)
        assert group.stuck([(consumer, ["tp"])]) == []
    for _ in range(30):  # the worker is full or every partition paused: nothing expected
        clock.now += CHECK_EVERY
        assert group.stuck([(consumer, [])]) == []


def test_quiet_with_nothing_to_fetch_restarts_the_bound() -> None:
    waiting = [False]
    group, clock = fetch_watch(waiting)
    consumer = Consumer()
    group.stuck([(consumer, ["tp"])])
    clock.now = 10.5
    assert group.stuck([(consumer, ["tp"])]) == []  # idle: no record waits
    waiting.append(True)
    clock.now = 15.0
    assert group.stuck([(consumer, ["tp"])]) == []
    clock.now = 21.0
    assert group.stuck([(consumer, ["tp"])]) == [(consumer, 10.5)]


def test_a_producer_is_stuck_only_when_every_held_task_waits_for_acks_past_the_bound() -> None:
    answers = [True]
    clock = Clock()
    watch = DeliveryWatch(10.0, probe=lambda _p: answers[-1], clock=clock)
    assert watch.stuck("p", True, 5) is None
    clock.now = 5.0
    assert watch.stuck("p", True, 6) is None  # a task became durable: the bound restarts
    clock.now = 14.0
    assert watch.stuck("p", False, 6) is None  # a task runs or waits its turn: not stuck
    clock.now = 15.0
    assert watch.stuck("p", True, 6) is None
    clock.now = 25.5
    answers.append(False)  # the broker is down: an outage, not a stuck producer
    assert watch.stuck("p", True, 6) is None
    answers.append(True)
    clock.now = 30.0
    assert watch.stuck("p", True, 6) is None
    clock.now = 36.0
    assert watch.stuck("p", True, 6) == 10.5
