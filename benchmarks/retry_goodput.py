"""Goodput with failures: does retrying cost more than the retried work itself?

For failure rates 0, 1 % and 10 % (each failing task fails once, then succeeds from the
retry level), two measurements in interleaved rounds, on fresh topics each time:

- drain: N tasks preloaded, drained by one worker; goodput = N / time to the last success.
  The ideal with failure rate f is the no-failure rate / (1 + f): every failure costs one
  more execution. Reported: goodput / ideal (issue target >= 0.93), by wall time and by the
  process's CPU time over the same window (CPU is far less noisy on a shared machine: the
  wall-time ratio of two runs at the same rate varied by 20 % here).
- latency: tasks sent at a fixed rate (``--load`` of the no-failure drain rate, a quarter by
  default: at half, the sender, the worker and the broker saturated the 2 cores and every
  rate measured queueing); enqueue -> first attempt start p50/p99 on the main topic (issue
  target: p99 within +10 % of no failures).

    python benchmarks/retry_goodput.py -b 127.0.0.1:9092 [--tasks 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import statistics
import threading
import time
import uuid

from streamtask import App, KafkaSettings, Task, Worker, WorkerSettings
from streamtask.events import Event
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure
from streamtask.retry import Backoff, RetryPolicy
from streamtask.worker.interpreter import tune_for_worker

RATES = (0.0, 0.01, 0.10)


def build(bootstrap: str, rate: float, starts: list[float]) -> App:
    app = App(f"goodput-{uuid.uuid4().hex[:6]}", kafka=KafkaSettings(bootstrap))
    every = round(1 / rate) if rate else 0

    @app.stage("work", partitions=8,
               retry=RetryPolicy(max_attempts=2, backoff=Backoff.FIXED, delay=0.05))
    def work(task: Task) -> None:
        if task.attempt == 1:
            starts.append(time.time() * 1000 - task.payload["sent_at"])
            if every and task.payload["n"] % every == 0:
                raise ConnectionError("fails once")

    ensure(app)
    return app


def drain(bootstrap: str, rate: float, tasks: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) from the first assignment to the last success,
    tasks preloaded."""
    app = build(bootstrap, rate, [])
    with app.producer() as producer:
        for n in range(tasks):
            producer.send("work", {"n": n, "sent_at": 0})
    worker = Worker(app, settings=WorkerSettings(concurrency=8))
    tune_for_worker()  # as `streamtask worker` does
    marks: list[tuple[float, float]] = []
    done = [0]

    def mark(event: Event, _fields: dict[str, object]) -> None:
        if event is Event.PARTITIONS_ASSIGNED and not marks:
            marks.append((time.monotonic(), time.process_time()))
        elif event is Event.TASK_SUCCEEDED:
            done[0] += 1
            if done[0] == tasks:
                marks.append((time.monotonic(), time.process_time()))
                worker.stop()

    worker.events.subscribe(mark, inline=True)  # timing marks
    worker.run()
    (wall0, cpu0), (wall1, cpu1) = marks[0], marks[-1]
    return wall1 - wall0, cpu1 - cpu0


def send_at_rate(bootstrap: str, name: str, per_second: float, total: int) -> None:
    """The service side, in its own process so it does not share the worker's GIL.

    Every task is encoded before the clock starts and sent as bytes: on this 2-core machine
    a sender encoding as it goes took CPU the worker needed, which measured the machine's
    saturation rather than the worker.
    """
    app = App(name, kafka=KafkaSettings(bootstrap))
    app.stage("work", partitions=8)(lambda task: None)
    # The clock starts once every task is encoded: time a sample first, and leave a margin,
    # since a start in the past would count the encoding as latency.
    sample = min(total, 1000)
    started = time.perf_counter()
    for n in range(sample):
        app.codec.encode(Task.new("work", {"n": n, "sent_at": 0}))
    per_task = (time.perf_counter() - started) / sample
    begin = time.time() + 1 + 1.5 * per_task * total
    records = []
    for n in range(total):
        task = Task.new("work", {"n": n, "sent_at": round((begin + n / per_second) * 1000)})
        records.append((task.id, app.codec.encode(task)))
    if time.time() > begin:
        raise SystemExit(f"encoding {total} tasks outlasted the start: raise the margin")
    producer = kafka.producer(app.kafka)
    topic = app.get_stage("work").topic
    for n, (key, value) in enumerate(records):
        pause = begin + n / per_second - time.time()
        if pause > 0:
            time.sleep(pause)
        kafka.produce(producer, topic, value, key, wait=0.01)
        producer.poll(0)
    producer.flush(30)


def latency(bootstrap: str, rate: float, per_second: float, seconds: float) -> list[float]:
    """Enqueue -> first attempt start (ms) at a fixed send rate (open loop)."""
    starts: list[float] = []
    app = build(bootstrap, rate, starts)
    worker = Worker(app, settings=WorkerSettings(concurrency=8))
    tune_for_worker()
    thread = threading.Thread(target=worker.run)
    thread.start()
    time.sleep(3)  # joined before the clock matters
    total = int(per_second * seconds)
    sender = multiprocessing.get_context("spawn").Process(
        target=send_at_rate, args=(bootstrap, app.name, per_second, total))
    sender.start()
    sender.join()
    if sender.exitcode != 0:
        raise SystemExit(f"the sender failed (exit code {sender.exitcode})")
    deadline = time.monotonic() + 30
    while len(starts) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.stop()
    thread.join(30)
    return starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bootstrap", default="127.0.0.1:9092")
    # Long enough that the last retry's own delay (50 ms) is a small part of the drain: at
    # 20,000 tasks it was a sixth of it.
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.25,
                        help="latency send rate as a fraction of the no-failure drain rate")
    args = parser.parse_args()
    logging.getLogger("streamtask").setLevel(logging.CRITICAL)  # the failures are on purpose

    times: dict[float, list[float]] = {rate: [] for rate in RATES}
    cpus: dict[float, list[float]] = {rate: [] for rate in RATES}
    for round_ in range(args.rounds):
        order = RATES if round_ % 2 == 0 else tuple(reversed(RATES))
        for rate in order:
            wall, cpu = drain(args.bootstrap, rate, args.tasks)
            times[rate].append(wall)
            cpus[rate].append(cpu)
    base = args.tasks / statistics.median(times[0.0])
    base_cpu = statistics.median(cpus[0.0]) / args.tasks
    print(f"drain of {args.tasks} tasks, {args.rounds} interleaved rounds, median:")
    for rate in RATES:
        goodput = args.tasks / statistics.median(times[rate])
        ideal = base / (1 + rate)
        cpu = statistics.median(cpus[rate]) / args.tasks
        print(f"  failures {rate:4.0%}: {goodput:8.0f} tasks/s, ideal {ideal:8.0f}, "
              f"ratio {goodput / ideal:.3f}; CPU {cpu * 1e6:5.1f} us/success, "
              f"ideal {base_cpu * (1 + rate) * 1e6:5.1f}, ratio {base_cpu * (1 + rate) / cpu:.3f}")

    per_second = base * args.load
    print(f"main-topic latency at {per_second:.0f} tasks/s for {args.seconds:.0f} s:")
    for rate in RATES:
        lat = latency(args.bootstrap, rate, per_second, args.seconds)
        cuts = statistics.quantiles(lat, n=100)
        print(f"  failures {rate:4.0%}: enqueue -> start p50 {cuts[49]:.1f} ms, "
              f"p99 {cuts[98]:.1f} ms ({len(lat)} tasks)")


if __name__ == "__main__":
    main()
