"""On a local 3-broker cluster (replication 3, min.insync.replicas 2): kill -9 the leader of
a busy partition mid-run and restart it, or restart every broker in turn under load. No task
is lost, the workers ride it out without a restart, and duplicates stay within the bound the
worker's settings give; an exactly-once pipeline yields each result exactly once.

These tests start three broker JVMs and take minutes, so they are marked
``cluster`` and left out of the default run: ``make test-cluster`` runs them.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

from streamtask.config import WorkerSettings
from streamtask.dev.broker import free_port, port_is_free
from streamtask.dev.cluster import LocalCluster
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure
from tests.apps.eos_app import build
from tests.helpers import (
    EosPipeline,
    RecorderRun,
    WorkerProcess,
    duplicate_bound,
    duplicates,
    missing,
    recorder_run,
    summary,
    wait_until,
)
from tests.test_cli_errors import streamtask
from tests.test_exactly_once_kill9 import results_by_n

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
TASKS = 20_000
TASK_SECONDS = 0.02
"""Two workers of 2 threads run at most 200 tasks/s: the backlog (100 s) outlasts the broker
events, and it is larger than the duplicate bound of three events (3 x 2 x 3002)."""
SETTINGS = WorkerSettings(concurrency=2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Started and stopped with the CLI (``kafka up --brokers 3``, ``kafka down``)."""
    data_dir = Path(tempfile.mkdtemp(prefix="streamtask-test-cluster-"))
    port = next(p for p in iter(free_port, None)
                if all(port_is_free(p + k) for k in range(1, 6)))
    up = streamtask("kafka", "up", "--brokers", "3", "--port", str(port),
                    "--data-dir", str(data_dir), "--timeout", "240", timeout=300)
    assert up.returncode == 0, up.stderr
    local = LocalCluster(data_dir)
    assert up.stdout.strip() == local.bootstrap
    status = streamtask("kafka", "status", "--data-dir", str(data_dir))
    assert status.returncode == 0 and status.stdout.count("running (pid") == 3, status.stdout
    try:
        yield local
    finally:
        down = streamtask("kafka", "down", "--data-dir", str(data_dir), timeout=200)
        assert down.stdout.strip() == "stopped", down.stderr
        shutil.rmtree(data_dir, ignore_errors=True)


def test_topics_ensure_gives_three_replicas_and_min_isr_two(
        cluster: LocalCluster, unique: str) -> None:
    app = build(f"r{unique}", cluster.bootstrap)
    ensure(app)
    client = kafka.admin(cluster.client_settings())
    topic = f"r{unique}.double"
    partitions = client.list_topics(topic, timeout=10).topics[topic].partitions.values()
    assert {len(p.replicas) for p in partitions} == {3}
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = client.describe_configs([resource])[resource].result(10)
    assert config["min.insync.replicas"].value == "2"


def fully_replicated(cluster: LocalCluster, topic: str) -> bool:
    """Every partition of ``topic`` has all 3 replicas in sync again."""
    try:
        metadata = kafka.admin(cluster.client_settings()).list_topics(topic, timeout=5)
    except kafka.KafkaException:
        return False
    partitions = metadata.topics[topic].partitions.values()
    return all(len(p.isrs) == 3 for p in partitions)


def written(cluster: LocalCluster, topic: str) -> int:
    """Records in ``topic`` by its high watermarks (transaction markers included)."""
    reader = kafka.consumer(cluster.client_settings(), f"{topic}-watermarks")
    try:
        count = len(reader.list_topics(topic, timeout=10).topics[topic].partitions)
        return sum(reader.get_watermark_offsets(kafka.TopicPartition(topic, p), timeout=10)[1]
                   for p in range(count))
    finally:
        reader.close()


def start_workers(run: RecorderRun, count: int = 2) -> list[WorkerProcess]:
    return [run.start_worker("--concurrency", str(SETTINGS.concurrency)) for _ in range(count)]


def check_outcome(run: RecorderRun, workers: list[WorkerProcess], events: int) -> None:
    """Every task ran, no worker restarted, duplicates within the bound of ``events``."""
    run.wait_until_all_ran(TASKS, timeout=240, watch=workers)
    run.wait_for_commit_beyond(TASKS - 1, timeout=120, watch=workers)
    for worker in workers:
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker.describe()
    executions = run.executions()
    assert not missing(executions, TASKS), summary(executions, TASKS)
    bound, formula = duplicate_bound(events * len(workers), SETTINGS)
    assert duplicates(executions) <= bound, f"{summary(executions, TASKS)}; bound {formula}"
    print(f"duplicates {duplicates(executions)} (bound {formula})")


def test_kill9_of_a_partition_leader_mid_run(cluster: LocalCluster, unique: str,
                                             tmp_path: Path) -> None:
    with recorder_run(cluster.bootstrap, unique, tmp_path, sleep=TASK_SECONDS,
                      partitions=6) as run:
        run.send(TASKS)
        workers = start_workers(run)
        run.wait_for_executions(TASKS // 10, timeout=120, watch=workers)
        victim = cluster.leader_of(run.stage.topic, 0)
        node = cluster.nodes[victim]
        pid = node.running_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        try:
            # The controller fences the victim once its heartbeats stop (about 9 s) and
            # moves leadership; the two remaining brokers keep the ISR at 2, so work goes on.
            wait_until(lambda: cluster.leader_of(run.stage.topic, 0) != victim, 90,
                       f"a new leader replaces broker {victim}", run.describe_workers,
                       interval=0.5)
            run.wait_for_executions(len(run.executions()) + 500, timeout=120, watch=workers)
        finally:
            node.up(timeout=180)
        assert missing(run.executions(), TASKS), "the restart came after the last task"
        check_outcome(run, workers, events=1)


def test_rolling_restart_of_every_broker_under_load(cluster: LocalCluster, unique: str,
                                                   tmp_path: Path) -> None:
    with recorder_run(cluster.bootstrap, unique, tmp_path, sleep=TASK_SECONDS,
                      partitions=6) as run:
        run.send(TASKS)
        workers = start_workers(run)
        run.wait_for_executions(TASKS // 8, timeout=120, watch=workers)
        for node in cluster.nodes.values():
            node.down()
            try:
                time.sleep(1.0)
                assert all(worker.running() for worker in workers), run.describe_workers()
            finally:
                node.up(timeout=180)
            wait_until(lambda: fully_replicated(cluster, run.stage.topic), 120,
                       "the restarted broker is back in every ISR", run.describe_workers,
                       interval=0.5)
        assert missing(run.executions(), TASKS), "the restarts came after the last task"
        check_outcome(run, workers, events=3)


def test_kill9_of_a_leader_during_an_exactly_once_pipeline(
        cluster: LocalCluster, unique: str, tmp_path: Path) -> None:
    total = 20_000  # 5 ms per stage, 2 threads: about 50 s, past the restart
    name = f"t{unique}"
    pipeline = EosPipeline(name, cluster.bootstrap, total, tmp_path)
    app = pipeline.app
    workers = {stage: pipeline.start_worker(stage, f"{stage}.out")
               for stage in ("double", "add_one", "publish")}
    try:
        wait_until(lambda: written(cluster, f"{name}.results") >= total // 5, 180,
                   "a fifth of the results are written", lambda: "")
        victim = cluster.leader_of(f"{name}.add_one", 0)
        pid = cluster.nodes[victim].running_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(3)
        cluster.nodes[victim].up(timeout=180)
        assert written(cluster, f"{name}.results") < total, "the pipeline ended before the restart"
        seen = results_by_n(cluster.bootstrap, f"{name}.results", app, total, timeout=300)
        exited = {stage: w.describe() for stage, w in workers.items() if not w.running()}
    finally:
        for worker in workers.values():
            worker.kill_group()
    missing_results = sorted(set(range(total)) - set(seen))
    duplicated = [(n, c) for n, c in seen.items() if c > 1]
    assert not missing_results, f"{len(missing_results)} missing, e.g. {missing_results[:20]}"
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {duplicated[:20]}"
    assert not exited, f"workers exited during the failover: {exited}"
