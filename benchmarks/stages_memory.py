"""Memory of one worker process serving 8 stages against 8 single-stage processes.

For each layout, on the same 8-step chain (``benchmarks.stages_memory_app``): start the
``streamtask worker`` process(es) with default options, send ``--tasks`` tasks through the
whole chain, wait until the last step ran them all, let the processes settle, and read each
process's resident memory from /proc: RSS (``VmRSS``; summing it over processes counts the
shared interpreter and library pages once per process) and PSS (``smaps_rollup``; shared
pages split between the processes that map them, so the sum is what the layout costs).

    python -m benchmarks.stages_memory [-b HOST:PORT] [--tasks 2000] [--settle 10]

Without ``-b`` it starts a throwaway local broker on free ports (``make bench-stages-memory``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks import stages_memory_app
from streamtask.dev.broker import LocalBroker, free_port
from streamtask.kafka.topics import ensure

APP_REF = "benchmarks.stages_memory_app:app"
STAGES = [f"step{i}" for i in range(1, stages_memory_app.STEPS + 1)]


def kib(pid: int, path: str, field: str) -> int:
    for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/{path}")


def measure(bootstrap: str, layout: list[list[str]], tasks: int, settle: float,
            work: Path) -> tuple[int, int]:
    """Sum of RSS and of PSS (KiB) over the processes of ``layout`` (stages per process)."""
    name = f"mem{uuid.uuid4().hex[:8]}"
    log = work / f"{name}.log"
    env = {**os.environ, "STAGES_MEMORY_APP": name, "STAGES_MEMORY_LOG": str(log),
           "STREAMTASK_BOOTSTRAP": bootstrap}
    app = stages_memory_app.build(name, bootstrap)
    ensure(app)
    processes = [subprocess.Popen(
        [sys.executable, "-m", "streamtask", "worker", APP_REF, "--bootstrap", bootstrap,
         *(arg for stage in stages for arg in ("--stage", stage))],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for stages in layout]
    try:
        time.sleep(10)  # start-up and group joins
        with app.producer() as producer:
            producer.send_many("step1", ({"n": i} for i in range(tasks)))
        deadline = time.monotonic() + 600
        while _done(log) < tasks:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise SystemExit(f"the chain did not finish: {_done(log)} of {tasks} tasks")
            time.sleep(0.5)
        time.sleep(settle)
        return (sum(kib(p.pid, "status", "VmRSS") for p in processes),
                sum(kib(p.pid, "smaps_rollup", "Pss") for p in processes))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)


def _done(log: Path) -> int:
    try:
        return len(log.read_text().splitlines())
    except FileNotFoundError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bootstrap")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streamtask-stages-memory-"))
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = LocalBroker(work / "broker", port=free_port(), controller_port=free_port())
        broker.up(timeout=120)
        bootstrap = broker.bootstrap
    try:
        for label, layout in (("1 process x 8 stages", [STAGES]),
                              ("8 processes x 1 stage", [[stage] for stage in STAGES])):
            rss, pss = measure(bootstrap, layout, args.tasks, args.settle, work)
            print(f"{label}: RSS {rss / 1024:.0f} MiB (sum), PSS {pss / 1024:.0f} MiB (sum), "
                  f"{args.tasks} tasks through 8 stages, {args.settle:g} s settled", flush=True)
    finally:
        if broker is not None:
            broker.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
