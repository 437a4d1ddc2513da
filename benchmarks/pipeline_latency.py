"""End-to-end latency of a 3-stage pipeline at half its maximum rate.

Each stage runs in its own ``streamtask worker`` process (as in production). First N tasks
are preloaded and drained to find the pipeline's maximum rate (first record in -> last
stored); then tasks are sent at half that rate from another process (open loop) and each
task's latency is its stored time minus its intended send time.

    python benchmarks/pipeline_latency.py -b 127.0.0.1:9092 [--tasks 50000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("parse", "enrich", "store")


def _app(name: str, bootstrap: str, log: str) -> object:
    os.environ.update(PIPELINE_APP=name, STREAMTASK_BOOTSTRAP=bootstrap, PIPELINE_LOG=log)
    sys.path.insert(0, str(ROOT))
    import importlib

    import benchmarks.pipeline_app as module

    return importlib.reload(module).app


def _send(name: str, bootstrap: str, log: str, total: int, per_second: float | None) -> None:
    app = _app(name, bootstrap, log)
    with app.producer() as producer:  # type: ignore[attr-defined]
        begin = time.time()
        for n in range(total):
            intended = begin + n / per_second if per_second else time.time()
            pause = intended - time.time()
            if pause > 0:
                time.sleep(pause)
            producer.send("parse", {"n": n, "sent_at": round(intended * 1000, 1)})


def _lines(log: str) -> list[tuple[int, float, float]]:
    try:
        with open(log) as rows:
            return [(int(a), float(b), float(c)) for a, b, c in
                    (row.split() for row in rows if row.strip())]
    except FileNotFoundError:
        return []


def run(bootstrap: str, total: int, per_second: float | None) -> list[tuple[int, float, float]]:
    name = f"pipe-{uuid.uuid4().hex[:6]}"
    log = tempfile.mktemp(prefix="pipeline-", suffix=".log")
    from streamtask.kafka.topics import ensure

    ensure(_app(name, bootstrap, log))  # type: ignore[arg-type]
    env = {**os.environ, "PIPELINE_APP": name, "STREAMTASK_BOOTSTRAP": bootstrap,
           "PIPELINE_LOG": log, "STREAMTASK_LOG_LEVEL": "WARNING"}
    if per_second is None:  # preload first: the drain measures the pipeline alone
        _send(name, bootstrap, log, total, None)
    workers = [subprocess.Popen([sys.executable, "-m", "streamtask", "worker",
                                 "benchmarks.pipeline_app:app", "--stage", stage],
                                cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
               for stage in STAGES]
    try:
        if per_second is not None:
            time.sleep(4)  # every worker joined before the clock matters
            sender = multiprocessing.get_context("spawn").Process(
                target=_send, args=(name, bootstrap, log, total, per_second))
            sender.start()
            sender.join()
        deadline = time.monotonic() + 300
        while len(_lines(log)) < total and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    return _lines(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    drained = run(args.bootstrap, args.tasks, None)
    finish = sorted(row[2] for row in drained)
    # From the 1st to the 99th percentile of completions: group joins stay out of the window.
    span = (finish[int(len(finish) * 0.99)] - finish[int(len(finish) * 0.01)]) / 1000
    max_rate = 0.98 * len(finish) / span
    print(f"drain: {len(drained)} tasks through 3 stages, max {max_rate:.0f} tasks/s")
    rate = max_rate / 2
    rows = run(args.bootstrap, int(rate * args.seconds), rate)
    latencies = [finished - sent for _, sent, finished in rows]
    cuts = statistics.quantiles(latencies, n=100)
    print(f"at {rate:.0f} tasks/s (half the max) for {args.seconds:.0f} s: end-to-end "
          f"p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms, max {max(latencies):.1f} ms "
          f"({len(rows)} tasks)")


if __name__ == "__main__":
    main()
