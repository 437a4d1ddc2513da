"""One table of pipeline scenarios, run by ``streamtask.testing`` twice: on the in-memory log
and on the session's real broker. Both runs assert the same outcomes, so the memory
transport is held to what Kafka does (routing, retries, dead letters, joins, compensation,
per-key order, poison records), and a user's test that passes in memory means the same on
a cluster.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import pytest

from streamtask import App, KafkaSettings, Task
from streamtask.model.pipeline import Switch, merged
from streamtask.retry import DeadLetter, RetryPolicy
from streamtask.testing import TestRun, run


@dataclass
class Side:
    """Where a scenario runs: ``memory`` or ``broker``."""

    name: str
    bootstrap: str

    def app(self) -> App:
        return App(f"t{uuid.uuid4().hex[:10]}", kafka=KafkaSettings(bootstrap=self.bootstrap))

    def run(self, app: App) -> AbstractContextManager[TestRun]:
        return run(app, real=self.name == "broker")


@pytest.fixture(params=["memory", pytest.param("broker", marks=pytest.mark.kafka)])
def side(request: pytest.FixtureRequest) -> Iterator[Side]:
    if request.param == "memory":
        yield Side("memory", "memory.invalid:9092")  # never dialled: nothing may connect
    else:
        yield Side("broker", request.getfixturevalue("kafka").bootstrap)


def test_chain_passes_each_result_to_the_next_stage(side: Side) -> None:
    app = side.app()

    @app.stage("validate", partitions=2, then="charge")
    def validate(task: Task) -> dict[str, object]:
        return {**task.payload, "valid": True}

    @app.stage("charge", partitions=2)
    def charge(task: Task) -> dict[str, object]:
        return {"order": task.payload["order"], "charged": task.payload["amount"]}

    with side.run(app) as t:
        for n in range(5):
            t.send("validate", {"order": n, "amount": n * 10}, key=f"o{n}")
        assert sorted(r["order"] for r in t.results("validate")) == list(range(5))
        assert sorted(t.results("charge"), key=lambda r: r["order"]) == \
            [{"order": n, "charged": n * 10} for n in range(5)]
        runs = {task.run_id for task in t.executions("charge")}
        assert runs == {task.id for task in t.executions("validate")}


def scan_failing_once(app: App, partitions: int, retry: RetryPolicy) -> None:
    """Stage ``scan``: its first execution fails, later ones return ``clean <file>``."""
    failures = {"left": 1}

    @app.stage("scan", partitions=partitions, retry=retry)
    def scan(task: Task) -> str:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("scanner busy")
        return f"clean {task.payload['file']}"


def test_a_failed_task_runs_again_once_its_retry_is_due(side: Side) -> None:
    app = side.app()
    scan_failing_once(app, 2, RetryPolicy(max_attempts=3, delay=2.0))
    with side.run(app) as t:
        t.send("scan", {"file": "a.pdf"}, key="a")
        assert t.results("scan") == []  # its retry is not due yet: the clock stands still
        t.advance(seconds=1)
        assert t.results("scan") == []
        t.advance(seconds=1)
        assert t.results("scan") == ["clean a.pdf"]
        assert [task.attempt for task in t.executions("scan")] == [1, 2]
        assert t.dead_letters("scan") == []


def test_a_retry_waits_its_delay_after_the_clock_moved_a_day(side: Side) -> None:
    """On a broker a record's timestamp is the wall clock's, a day behind the fake clock
    here: the worker's cap on a retry's due time (its record's timestamp + 2 x delay) must
    read it on the fake clock, or the retry runs at once."""
    app = side.app()
    scan_failing_once(app, 1, RetryPolicy(max_attempts=2, delay=300.0))
    with side.run(app) as t:
        t.advance(seconds=86_400)
        t.send("scan", {"file": "a.pdf"}, key="a")
        assert t.results("scan") == []
        t.advance(seconds=299)
        assert t.results("scan") == []  # due 300 s after the failure, on the fake clock
        t.advance(seconds=2)
        assert t.results("scan") == ["clean a.pdf"]


def test_exhausted_retries_end_in_the_dead_letter_queue_with_the_reason(side: Side) -> None:
    app = side.app()

    @app.stage("scan", partitions=2, retry=RetryPolicy(max_attempts=3, delay=1.0))
    def scan(task: Task) -> None:
        raise ConnectionError(f"scanner down for {task.payload['file']}")

    with side.run(app) as t:
        t.send("scan", {"file": "a.pdf"}, key="a")
        t.advance(seconds=10)  # the 1 s and 2 s retries run at their own due times
        letters = t.dead_letters("scan")
        assert [(d.reason, d.attempts) for d in letters] == [("exhausted", 3)]
        assert letters[0].error == \
            "ConnectionError: scanner down for a.pdf (gave up after 3 attempt(s))"
        assert letters[0].task is not None and letters[0].task.payload == {"file": "a.pdf"}
        assert [task.attempt for task in t.executions("scan")] == [1, 2, 3]


def test_a_list_result_fans_out_one_task_per_item(side: Side) -> None:
    app = side.app()

    @app.stage("split", partitions=2, then="load")
    def split(task: Task) -> list[dict[str, int]]:
        return [{"chunk": n} for n in range(task.payload["chunks"])]

    @app.stage("load", partitions=3)
    def load(task: Task) -> int:
        return int(task.payload["chunk"]) * 100

    with side.run(app) as t:
        t.send("split", {"chunks": 12})
        assert sorted(t.results("load")) == [n * 100 for n in range(12)]


def test_a_switch_routes_each_result_by_a_payload_field(side: Side) -> None:
    app = side.app()

    @app.stage("classify", partitions=2,
               then=Switch("kind", {"photo": "resize", "video": "transcode"}, default="store"))
    def classify(task: Task) -> dict[str, object]:
        return task.payload

    for name in ("resize", "transcode", "store"):
        app.stage(name, partitions=1)(lambda task: task.payload["name"])

    with side.run(app) as t:
        for kind, name in [("photo", "p1"), ("video", "v1"), ("pdf", "d1"), ("photo", "p2")]:
            t.send("classify", {"kind": kind, "name": name}, key=name)
        assert sorted(t.results("resize")) == ["p1", "p2"]
        assert t.results("transcode") == ["v1"]
        assert t.results("store") == ["d1"]


def _order_app(side: Side, join_timeout: float = 60.0) -> App:
    app = side.app()

    @app.stage("pack", partitions=2, then=("send_email", "send_sms"))
    def pack(task: Task) -> dict[str, object]:
        return {"order": task.payload["order"]}

    @app.stage("send_email", partitions=2, then="notified")
    def send_email(task: Task) -> dict[str, object]:
        return {"email": f"sent #{task.payload['order']}"}

    @app.stage("send_sms", partitions=2, then="notified")
    def send_sms(task: Task) -> dict[str, object] | None:
        if task.payload["order"] == 13:
            return None  # this branch ends the run: its fork can never be complete
        return {"sms": f"sent #{task.payload['order']}"}

    app.join("notified", branches=["send_email", "send_sms"], partitions=2,
             timeout=join_timeout)(merged)
    return app


def test_a_join_waits_for_every_branch_of_its_fork(side: Side) -> None:
    app = _order_app(side)
    with side.run(app) as t:
        for n in range(3):
            t.send("pack", {"order": n}, key=f"o{n}")
        joined = sorted(t.results("notified"), key=lambda r: r["send_email"]["email"])
        assert joined == [{"send_email": {"email": f"sent #{n}"},
                           "send_sms": {"sms": f"sent #{n}"}} for n in range(3)]


def test_a_join_missing_a_branch_is_dead_lettered_at_its_timeout(side: Side) -> None:
    app = _order_app(side, join_timeout=5.0)
    with side.run(app) as t:
        t.send("pack", {"order": 13}, key="o13")
        assert t.results("notified") == []
        t.advance(seconds=4)
        assert t.dead_letters("notified") == []
        t.advance(seconds=2)
        letters = t.dead_letters("notified")
        assert [d.reason for d in letters] == ["join-timeout"]
        assert "missing branches: send_sms" in letters[0].error


def test_a_dead_lettered_task_is_compensated(side: Side) -> None:
    app = side.app()

    @app.stage("ship", partitions=2, compensate="refund", retry=RetryPolicy(max_attempts=1))
    def ship(task: Task) -> None:
        raise RuntimeError(f"no courier for order {task.payload['order']}")

    @app.stage("refund", partitions=2)
    def refund(task: Task) -> dict[str, object]:
        return {"refunded": task.payload["order"], "because": task.headers["reason"],
                "of": task.headers["compensates"]}

    with side.run(app) as t:
        t.send("ship", {"order": 7}, key="o7")
        assert [d.reason for d in t.dead_letters("ship")] == ["exhausted"]
        assert t.results("refund") == [{"refunded": 7, "because": "exhausted", "of": "ship"}]


def test_tasks_of_one_key_run_in_the_order_they_were_sent(side: Side) -> None:
    app = side.app()
    running: set[str] = set()
    overlaps: list[str] = []
    guard = threading.Lock()

    @app.stage("apply", partitions=3, concurrency=8)
    def apply(task: Task) -> tuple[str, int]:
        with guard:
            if task.key in running:
                overlaps.append(str(task.key))
            running.add(str(task.key))
        try:
            return str(task.key), int(task.payload["n"])
        finally:
            with guard:
                running.discard(str(task.key))

    with side.run(app) as t:
        for n in range(30):
            t.send("apply", {"n": n}, key=f"account-{n % 3}")
        results = [(key, n) for key, n in t.results("apply")]
        for account in range(3):
            mine = [n for key, n in results if key == f"account-{account}"]
            assert mine == list(range(account, 30, 3))
        assert overlaps == []


def test_a_poison_record_goes_to_the_dead_letter_queue(side: Side) -> None:
    app = side.app()

    @app.stage("scan", partitions=2)
    def scan(task: Task) -> str:
        return "scanned"

    with side.run(app) as t:
        t.produce(app.get_stage("scan").topic, b"\x00not an envelope", key="bad")
        t.send("scan", {"file": "ok.pdf"}, key="good")
        assert t.results("scan") == ["scanned"]
        letters = t.dead_letters("scan")
        assert [d.reason for d in letters] == ["poison:undecodable"]
        assert letters[0].task is None and letters[0].record.value == b"\x00not an envelope"


def test_a_handler_asking_for_the_dead_letter_queue_gets_there_at_once(side: Side) -> None:
    app = side.app()

    @app.stage("charge", partitions=1)
    def charge(task: Task) -> None:
        raise DeadLetter(f"card {task.payload['card']} is blocked")

    with side.run(app) as t:
        t.send("charge", {"card": "4111"})
        letters = t.dead_letters("charge")
        assert [(d.reason, d.attempts) for d in letters] == [("requested", 1)]
        assert "card 4111 is blocked" in letters[0].error


def test_a_delayed_task_runs_once_the_clock_reaches_its_time(side: Side) -> None:
    app = side.app()

    @app.stage("remind", partitions=1, retry=RetryPolicy(levels=(5.0, 60.0)))
    def remind(task: Task) -> str:
        return str(task.payload["to"])

    with side.run(app) as t:
        t.send("remind", {"to": "ann"}, delay=3.0)
        t.send("remind", {"to": "bob"})
        assert t.results("remind") == ["bob"]
        t.advance(seconds=2.9)
        assert t.results("remind") == ["bob"]
        t.advance(seconds=0.1)
        assert t.results("remind") == ["bob", "ann"]


def test_exactly_once_stages_deliver_each_result_once(side: Side) -> None:
    app = side.app()
    failures = {"left": 1}

    @app.stage("debit", partitions=2, then="credit", exactly_once=True,
               retry=RetryPolicy(max_attempts=2, delay=1.0))
    def debit(task: Task) -> dict[str, int]:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("ledger busy")
        return {"amount": task.payload["amount"]}

    @app.stage("credit", partitions=2, exactly_once=True)
    def credit(task: Task) -> int:
        return int(task.payload["amount"])

    with side.run(app) as t:
        for amount in (5, 7, 9):
            t.send("debit", {"amount": amount}, key=f"acct{amount}")
        assert sorted(t.results("credit")) in ([5, 7], [5, 9], [7, 9])  # one is retrying
        t.advance(seconds=1)
        assert sorted(t.results("credit")) == [5, 7, 9]
        assert len(t.executions("debit")) == 4
