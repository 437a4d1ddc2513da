"""Capacity figures for docs/operations.md: tasks/s per worker process, and memory per
in-flight task, measured with real ``streamtask worker`` processes.

``throughput``: fill a topic with N tasks, start P worker processes (``--concurrency C``),
and time the group's committed offsets from 10 % to 90 % of N (start-up and the tail are
left out), and the workers' CPU time over the same span, which gives tasks per core even
on a busy machine. ``memory``: one worker with ``--concurrency C`` on tasks that sleep long, its RSS
once C tasks are in flight, minus its RSS when idle, divided by C.

    python benchmarks/capacity.py -b 127.0.0.1:9092 throughput --sleep-ms 0 --processes 1
    python benchmarks/capacity.py -b 127.0.0.1:9092 memory --concurrency 500
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from streamtask import App, KafkaSettings
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure

ROOT = Path(__file__).resolve().parent.parent


def _app(name: str, bootstrap: str, partitions: int) -> App:
    app = App(name, kafka=KafkaSettings(bootstrap))

    @app.stage("work", partitions=partitions)
    def work(_task: object) -> None:
        """The workers run benchmarks.capacity_app; this app only sends and reads offsets."""

    return app


def _workers(app: App, count: int, concurrency: int, sleep_ms: float,
             partitions: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "CAPACITY_APP": app.name, "CAPACITY_SLEEP_MS": str(sleep_ms),
           "CAPACITY_PARTITIONS": str(partitions), "STREAMTASK_BOOTSTRAP": app.kafka.bootstrap,
           "STREAMTASK_LOG_LEVEL": "WARNING"}
    return [subprocess.Popen([sys.executable, "-m", "streamtask", "worker",
                              "benchmarks.capacity_app:app", "--concurrency", str(concurrency)],
                             cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
            for _ in range(count)]


def _committed(reader: Any, app: App) -> int:
    stage = app.get_stage("work")
    found = reader.committed([kafka.TopicPartition(stage.topic, p)
                              for p in range(stage.partitions)], timeout=10)
    return sum(tp.offset for tp in found if tp.offset >= 0)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (the rate per core, however busy the
    machine is with other work)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def throughput(args: argparse.Namespace) -> None:
    app = _app(f"capacity-{uuid.uuid4().hex[:6]}", args.bootstrap, args.partitions)
    ensure(app)
    with app.producer() as producer:
        producer.send_many("work", ({"n": n} for n in range(args.tasks)))
    reader = kafka.consumer(app.kafka, app.get_stage("work").group)
    workers = _workers(app, args.processes, args.concurrency, args.sleep_ms, args.partitions)
    marks: dict[float, tuple[float, float]] = {}
    try:
        while len(marks) < 2:
            done = _committed(reader, app)
            for fraction in (0.1, 0.9):
                if fraction not in marks and done >= fraction * args.tasks:
                    marks[fraction] = (time.monotonic(),
                                       sum(_cpu_seconds(w.pid) for w in workers))
            time.sleep(0.05)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(60)
        reader.close()
    counted = 0.8 * args.tasks
    rate = counted / (marks[0.9][0] - marks[0.1][0])
    per_cpu = counted / (marks[0.9][1] - marks[0.1][1])
    print(f"sleep {args.sleep_ms} ms, {args.processes} process(es) x concurrency "
          f"{args.concurrency}, {args.partitions} partitions: {rate:,.0f} tasks/s "
          f"({rate / args.processes:,.0f} per process), {per_cpu:,.0f} tasks per CPU-second "
          "of the workers")


def memory(args: argparse.Namespace) -> None:
    app = _app(f"capacity-{uuid.uuid4().hex[:6]}", args.bootstrap, args.partitions)
    ensure(app)
    [worker] = _workers(app, 1, args.concurrency, 60_000, args.partitions)
    try:
        time.sleep(15)  # joined and idle
        idle = _rss_mib(worker.pid)
        with app.producer() as producer:
            producer.send_many("work", ({"n": n} for n in range(args.concurrency)))
        time.sleep(15)  # every task started and sleeping
        busy = _rss_mib(worker.pid)
    finally:
        worker.kill()
        worker.wait(60)
    per_task = (busy - idle) * 1024 / args.concurrency
    print(f"concurrency {args.concurrency}: RSS idle {idle:.0f} MiB, with "
          f"{args.concurrency} tasks in flight {busy:.0f} MiB: {per_task:.1f} KiB per "
          "in-flight task (thread stack pages + task)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("throughput")
    run.add_argument("--tasks", type=int, default=50_000)
    run.add_argument("--sleep-ms", type=float, default=0.0)
    run.add_argument("--processes", type=int, default=1)
    sub.add_parser("memory")
    args = parser.parse_args()
    if args.what == "throughput":
        throughput(args)
    else:
        memory(args)


if __name__ == "__main__":
    main()
