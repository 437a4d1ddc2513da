"""Exactly-once mode: kill -9 workers of a 3-stage pipeline again and again; the final topic
(read ``read_committed``) holds every expected result exactly once."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import confluent_kafka
import pytest

from streamtask import App
from tests.helpers import EosPipeline, WorkerProcess
from tests.topic_reader import read_to_end

TASKS = 1500
STAGES = ("double", "add_one", "publish")


def results_by_n(bootstrap: str, topic: str, app: App, expected: int,
                 timeout: float, tick: Callable[[], None] = lambda: None) -> Counter[int]:
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"{topic}-reader-{time.monotonic_ns()}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    seen: Counter[int] = Counter()
    deadline = time.monotonic() + timeout
    try:
        quiet_until = None
        while time.monotonic() < deadline:
            tick()
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                if sum(seen.values()) >= expected:
                    quiet_until = quiet_until or time.monotonic() + 3
                    if time.monotonic() > quiet_until:
                        break  # stayed at the expected count: no late duplicates
                continue
            task = app.codec.decode(message.value())
            assert task.payload["value"] == task.payload["n"] * 2 + 1
            seen[task.payload["n"]] += 1
    finally:
        consumer.close()
    return seen


@pytest.mark.timeout(240)
def test_kill9_during_exactly_once_pipeline_yields_each_result_once(
        kafka, unique: str, tmp_path: Path) -> None:
    pipeline = EosPipeline(f"t{unique}", kafka.bootstrap, TASKS, tmp_path)
    app = pipeline.app
    workers: dict[str, WorkerProcess] = {}
    count = [0]

    def start(stage: str) -> None:
        count[0] += 1
        workers[stage] = pipeline.start_worker(stage, f"{stage}-{count[0]}.out")

    def restart_exited() -> None:
        """Like any supervisor: a worker that stopped on a transaction error is restarted."""
        for stage, worker in list(workers.items()):
            if not worker.running():
                start(stage)

    rng = random.Random(7)
    try:
        for stage in STAGES:
            start(stage)
        for _ in range(6):
            time.sleep(rng.uniform(1.5, 3.0))
            restart_exited()
            victim = rng.choice(STAGES)
            workers[victim].kill9()
            start(victim)
        early = read_to_end(kafka.bootstrap, f"t{unique}.results")
        assert len(early) < TASKS, "the kills came after the pipeline had finished"
        results_by_n(kafka.bootstrap, f"t{unique}.results", app, TASKS, timeout=150,
                     tick=restart_exited)
    finally:
        for worker in workers.values():
            worker.kill_group()
    # With every worker gone no transaction can commit any more: this read sees all there is.
    seen = Counter(app.codec.decode(m.value()).payload["n"]
                   for m in read_to_end(kafka.bootstrap, f"t{unique}.results"))
    missing = sorted(set(range(TASKS)) - set(seen))
    duplicated = [(n, c) for n, c in seen.items() if c > 1]
    assert not missing, f"{len(missing)} results missing, e.g. {missing[:20]}"
    assert not duplicated, f"{len(duplicated)} results duplicated, e.g. {duplicated[:20]}"
