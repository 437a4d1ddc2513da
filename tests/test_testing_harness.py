"""What ``streamtask.testing`` promises beyond the shared scenarios (memory only): the fake
clock runs each retry at its own due time, settling fails loudly on a hung handler, the
memory log keeps transactions invisible until they commit and one key on one partition, and
the app is given back untouched."""

from __future__ import annotations

import threading

import pytest

from streamtask import App, ConfigurationError, KafkaSettings, Task, clock
from streamtask.errors import StreamtaskError
from streamtask.kafka import clients as kafka
from streamtask.retry import RetryPolicy
from streamtask.testing import MemoryLog, MemoryTransport, NotSettled, run

NOWHERE = KafkaSettings(bootstrap="memory.invalid:9092")


def _app(name: str) -> App:
    return App(name, kafka=NOWHERE)


def test_each_retry_runs_at_its_own_due_time_on_the_fake_clock() -> None:
    app = _app("ladder")
    ran_at: list[int] = []

    @app.stage("scan", partitions=1, retry=RetryPolicy(max_attempts=4, delay=1.0))
    def scan(task: Task) -> None:
        ran_at.append(clock.now_ms())
        raise ConnectionError("down")

    with run(app) as t:
        start = t.now_ms
        t.send("scan", {})
        t.advance(seconds=60)
        assert [at - start for at in ran_at] == [0, 1000, 3000, 7000]
        assert t.now_ms == start + 60_000
        assert [d.reason for d in t.dead_letters("scan")] == ["exhausted"]


def test_a_hung_handler_makes_settle_fail_with_what_is_pending() -> None:
    app = _app("hung")
    release = threading.Event()

    @app.stage("stuck", partitions=1)
    def stuck(task: Task) -> None:
        release.wait(30)

    with run(app, settle_timeout=0.5) as t:
        t.send("stuck", {})
        with pytest.raises(NotSettled, match=r"hung\.stuck\[0\]: group hung\.stuck committed 0 "
                                             r"of 1 \(1 handler\(s\) running\)"):
            t.settle()
        release.set()
        assert t.results("stuck") == [None]


def test_async_handlers_are_recorded_like_plain_ones() -> None:
    app = _app("coro")

    @app.stage("fetch", partitions=1)
    async def fetch(task: Task) -> str:
        return f"got {task.payload['url']}"

    with run(app) as t:
        t.send("fetch", {"url": "a"})
        assert t.results("fetch") == ["got a"]


def test_the_app_gets_its_transport_handlers_and_clock_back() -> None:
    app = _app("restored")

    @app.stage("echo", partitions=1)
    def echo(task: Task) -> object:
        return task.payload

    with run(app) as t:
        assert app.transport is not kafka.KAFKA
        t.advance(seconds=3600)
        assert abs(clock.now_ms() - t.now_ms) < 1000 and t.now_ms > 0
    assert app.transport is kafka.KAFKA
    assert app.get_stage("echo").handler is echo
    assert abs(clock.now_ms() - __import__("time").time_ns() // 1_000_000) < 1000


def test_a_handler_sending_tasks_with_app_send_writes_to_the_run_only() -> None:
    app = _app("sender")

    @app.stage("order", partitions=1)
    def order(task: Task) -> None:
        app.send("invoice", {"order": task.payload["n"]})

    @app.stage("invoice", partitions=1)
    def invoice(task: Task) -> int:
        return int(task.payload["order"])

    with run(app) as t:
        t.send("order", {"n": 4})
        assert t.results("invoice") == [4]
    assert app._producer is None  # the next app.send opens a producer on the real transport


def test_a_run_that_cannot_start_restores_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app("broken")
    app.stage("a", partitions=1)(lambda task: None)
    handlers = dict(app.stages)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ConfigurationError("this worker cannot start")

    monkeypatch.setattr("streamtask.testing.harness.StageHost", refuse)
    with pytest.raises(ConfigurationError, match="cannot start"), run(app):
        pass
    assert app.transport is kafka.KAFKA
    assert app.stages == handlers


def test_runs_cannot_overlap_because_they_share_the_clock() -> None:
    first, second = _app("first"), _app("second")
    for app in (first, second):
        app.stage("s", partitions=1)(lambda task: None)
    with run(first), pytest.raises(StreamtaskError, match=r"another streamtask\.testing run"), \
            run(second):
        pass


def test_a_transaction_is_invisible_until_it_commits_and_gone_if_aborted() -> None:
    log = MemoryLog()
    log.create("out", 1)
    log.create("in", 1)
    transport = MemoryTransport(log)
    producer = transport.producer(NOWHERE, **{"transactional.id": "tx"})
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce("out", b"aborted", "k")
    producer.abort_transaction()
    producer.begin_transaction()
    producer.produce("out", b"kept", "k")
    producer.send_offsets_to_transaction([kafka.TopicPartition("in", 0, 3)], "group")
    assert log.end("out", 0) == 0 and log.committed("group", ("in", 0)) is None
    producer.commit_transaction()
    assert [r.value() for r in log.records("out")] == [b"kept"]
    assert log.committed("group", ("in", 0)) == 3


def test_one_key_always_lands_on_one_partition() -> None:
    log = MemoryLog()
    log.create("t", 6)
    for n in range(60):
        log.append("t", str(n).encode(), f"key-{n % 4}".encode(), None)
    by_key: dict[bytes | None, set[int]] = {}
    for record in log.records("t"):
        by_key.setdefault(record.key(), set()).add(record.partition())
    assert all(len(parts) == 1 for parts in by_key.values())


def test_exactly_once_and_at_least_once_stages_of_one_group_run_as_the_cli_runs_them() -> None:
    app = _app("mixed")

    @app.stage("plain", partitions=1, group="shared", then="exact")
    def plain(task: Task) -> dict[str, int]:
        return {"n": task.payload["n"] + 1}

    @app.stage("exact", partitions=1, group="shared", exactly_once=True)
    def exact(task: Task) -> int:
        return int(task.payload["n"]) * 10

    with run(app) as t:
        t.send("plain", {"n": 1})
        assert t.results("exact") == [20]


def test_a_pipeline_version_below_one_is_refused_when_declared() -> None:
    with pytest.raises(ConfigurationError, match="version must be 1 or more"):
        App("versioned", kafka=NOWHERE, version=0)
