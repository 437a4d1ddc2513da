"""The chaos harness: a 3-stage pipeline, two workers per stage, ``kill -9`` at random and a
broker stop/start in the middle; then count what reached the output topic.

Killed workers are restarted at once with the same instance id (as a supervisor would), and
so is any worker that exits on its own (an exactly-once worker stops on a transaction error).
When every task's result is out and every stage's group has committed all of its input,
the workers are stopped and the output topic is read to its end offsets. Lost results must be
none; duplicates must stay within :meth:`ChaosPlan.duplicate_bound`, computed from the
settings the workers run with.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka

from streamtask import App
from streamtask.config import WorkerSettings
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure
from tests.apps.chaos_app import PARTITIONS, build
from tests.conftest import TestBroker
from tests.helpers import WorkerProcess
from tests.topic_reader import read_to_end

STAGES = ("first", "second", "third")


@dataclass(frozen=True)
class ChaosPlan:
    tasks: int
    kills: int
    exactly_once: bool
    outage: float = 5.0
    """Seconds the broker is down, once, after half the kills (0: no outage)."""
    sleep: float = 0.002
    """Seconds each task takes, at every stage."""
    kill_every: tuple[float, float] = (1.5, 3.0)
    concurrency: int = 4
    prefetch: int = 100
    commit_every: int = 100
    workers_per_stage: int = 2
    seed: int = 1

    @property
    def settings(self) -> WorkerSettings:
        return WorkerSettings(concurrency=self.concurrency, prefetch=self.prefetch,
                              commit_every=self.commit_every)

    def duplicate_bound(self) -> tuple[int, str]:
        """Most duplicates the plan may cause, with the formula for messages.

        A crash reruns at most the held window plus the tasks finished since the last commit
        (README, delivery guarantees); a rerun anywhere in the pipeline adds at most one
        result. A broker outage may cost every worker its partitions: count it as one crash
        per worker. Exactly-once readers see no duplicates at all.
        """
        if self.exactly_once:
            return 0, "exactly-once: 0"
        per_crash = self.settings.max_buffered + self.commit_every
        workers = len(STAGES) * self.workers_per_stage
        crashes = self.kills + (workers if self.outage else 0)
        return crashes * per_crash, (
            f"({self.kills} kills + {workers if self.outage else 0} workers for the outage) x "
            f"(max_buffered {self.settings.max_buffered} + commit_every {self.commit_every})"
            f" = {crashes * per_crash}")


@dataclass
class ChaosResult:
    counts: Counter[int]
    kills: int
    restarts: int
    seconds: float
    done_at_last_kill: int
    """Distinct results out when the last kill struck (less than all: it struck mid-run)."""
    kills_by_stage: Counter[str] = field(default_factory=Counter)

    def lost(self, tasks: int) -> list[int]:
        return [n for n in range(tasks) if n not in self.counts]

    @property
    def duplicates(self) -> int:
        return sum(self.counts.values()) - len(self.counts)

    def describe(self, plan: ChaosPlan) -> str:
        _bound, formula = plan.duplicate_bound()
        return (f"{plan.tasks} tasks, {'exactly-once' if plan.exactly_once else 'at-least-once'}"
                f": {len(self.lost(plan.tasks))} lost, {self.duplicates} duplicates "
                f"({self.duplicates / max(1, self.kills):.1f} per kill; bound {formula}); "
                f"{self.kills} kills {dict(self.kills_by_stage)}, {self.restarts} restarts, "
                f"{self.seconds:.0f} s; {self.done_at_last_kill} done at the last kill")


class OutputTail:
    """Counts results on the output topic as they come (read_committed)."""

    def __init__(self, bootstrap: str, topic: str, app: App) -> None:
        self.app = app
        self.counts: Counter[int] = Counter()
        self._consumer = confluent_kafka.Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"{topic}-tail-{time.monotonic_ns()}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "logger": logging.getLogger("tests.chaos")})
        self._consumer.subscribe([topic])

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for message in self._consumer.consume(500, min(left, 0.2)):
                if message.error() is None:
                    self.counts[self.app.codec.decode(message.value()).payload["n"]] += 1

    def close(self) -> None:
        self._consumer.close()


class Chaos:
    """One run of a :class:`ChaosPlan` against the test session's broker."""

    def __init__(self, broker: TestBroker, name: str, tmp_path: Path, plan: ChaosPlan) -> None:
        self.broker = broker
        self.plan = plan
        self.tmp_path = tmp_path
        self.app = build(name, broker.bootstrap, exactly_once=plan.exactly_once,
                         sleep=plan.sleep)
        self.env = {**os.environ, "CHAOS_APP": name, "CHAOS_EOS": "1" if plan.exactly_once
                    else "0", "CHAOS_SLEEP": repr(plan.sleep),
                    "STREAMTASK_BOOTSTRAP": broker.bootstrap, "PYTHONUNBUFFERED": "1"}
        self.rng = random.Random(plan.seed)
        self.workers: dict[tuple[str, int], WorkerProcess] = {}
        self.started = 0
        self.restarts = 0
        self.all_workers: list[WorkerProcess] = []

    # -- workers -----------------------------------------------------------------------------

    def _start(self, slot: tuple[str, int]) -> None:
        stage, index = slot
        self.started += 1
        plan = self.plan
        worker = WorkerProcess(
            [sys.executable, "-m", "streamtask", "worker", "tests.apps.chaos_app:app",
             "--stage", stage, "--concurrency", str(plan.concurrency),
             "--prefetch", str(plan.prefetch), "--commit-every", str(plan.commit_every),
             "--instance-id", f"{stage}-{index}"],
            self.env, self.tmp_path / f"{stage}-{index}-{self.started}.out")
        self.workers[slot] = worker
        self.all_workers.append(worker)

    def _restart_exited(self) -> None:
        for slot, worker in list(self.workers.items()):
            if not worker.running():
                self.restarts += 1
                self._start(slot)

    def describe_workers(self) -> str:
        return "\n".join(w.describe()[-3000:] for w in self.workers.values())

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> ChaosResult:
        plan = self.plan
        ensure(self.app)
        with self.app.producer() as producer:
            producer.send_many("first", ({"n": n} for n in range(plan.tasks)))
        started = time.monotonic()
        tail = OutputTail(self.broker.bootstrap, self.app.stages["out"].topic, self.app)
        try:
            for stage in STAGES:
                for index in range(plan.workers_per_stage):
                    self._start((stage, index))
            kills_by_stage = self._strike(tail)
            done_at_last_kill = len(tail.counts)
            self._wait_for_all(tail, timeout=120 + plan.tasks / 50)
            self._settle(tail)
        finally:
            tail.close()
            for worker in self.all_workers:
                worker.signal(15)
            for worker in self.all_workers:
                if worker.running():
                    try:
                        worker.wait(timeout=40)
                    except AssertionError:
                        worker.kill_group()
        seconds = time.monotonic() - started
        counts = Counter(self.app.codec.decode(m.value()).payload["n"]
                         for m in read_to_end(self.broker.bootstrap,
                                              self.app.stages["out"].topic, timeout=300))
        return ChaosResult(counts, plan.kills, self.restarts, seconds, done_at_last_kill,
                           kills_by_stage)

    def _wait(self, tail: OutputTail, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            tail.poll(min(0.5, max(0.0, deadline - time.monotonic())))
            self._restart_exited()

    def _strike(self, tail: OutputTail) -> Counter[str]:
        plan = self.plan
        kills: Counter[str] = Counter()
        for number in range(plan.kills):
            self._wait(tail, self.rng.uniform(*plan.kill_every))
            slot = self.rng.choice(sorted(self.workers))
            self.workers[slot].kill9()
            kills[slot[0]] += 1
            self._start(slot)
            if plan.outage and number == plan.kills // 2:
                self._broker_outage(tail)
        return kills

    def _broker_outage(self, tail: OutputTail) -> None:
        local = self.broker.local
        assert local is not None, "the chaos suite stops and starts the session's broker"
        try:
            local.down()
            time.sleep(self.plan.outage)
        finally:
            local.up(timeout=120)
        self._wait(tail, 1.0)

    def _wait_for_all(self, tail: OutputTail, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(tail.counts) < self.plan.tasks:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {len(tail.counts)} of {self.plan.tasks} results after {timeout:.0f}s"
                    f"\n{self.describe_workers()}")
            self._wait(tail, 1.0)

    def _settle(self, tail: OutputTail, timeout: float = 60.0) -> None:
        """Wait until every stage's group committed all of its input: no rerun is pending."""
        readers = {stage: kafka.consumer(self.app.kafka, self.app.stages[stage].group)
                   for stage in STAGES}
        slack = 1 if self.plan.exactly_once else 0  # the last transaction's commit marker
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if all(_lag(readers[s], self.app.stages[s].topic) <= slack for s in STAGES):
                    return
                self._wait(tail, 1.0)
            raise AssertionError(f"the stages did not commit all input within {timeout:.0f}s"
                                 f"\n{self.describe_workers()}")
        finally:
            for reader in readers.values():
                reader.close()


def _lag(reader: Any, topic: str) -> int:
    """The largest distance from a partition's committed offset to its end."""
    partitions = [kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
    lag = 0
    for tp in reader.committed(partitions, timeout=10):
        _low, high = reader.get_watermark_offsets(tp, timeout=10)
        lag = max(lag, high - max(tp.offset, 0))
    return lag
