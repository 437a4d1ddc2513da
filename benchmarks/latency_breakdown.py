"""Where a task's enqueue -> handler-start latency goes inside the worker, at a fixed rate.

The ``latency`` scenario's sender (a child process, open loop) sends to a fresh topic; the
worker runs in *this* process with timestamps noted at each step of a task's way, by
wrapping the worker's own methods (a diagnostic: nothing here ships):

- ``created``: the record's CreateTime (set by the sender's client at ``produce``, in ms);
- ``received``: the loop's ``_receive`` got the record from ``consume``/``poll``;
- ``submitted``: the loop handed the task to the thread pool;
- ``started``: the handler began.

It prints, per step, percentiles (ms) of the time from the intended send time, and of each
step's own share, and counts what the loop was doing (which blocking call) when records
arrived, read from where the loop thread was when each record's fetch landed.

    python -m benchmarks.latency_breakdown -b 127.0.0.1:9092 [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from fastavro import schemaless_reader

from streamtask.config import WorkerSettings
from streamtask.dev import bench, bench_latency, bench_peers
from streamtask.events import Event
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure
from streamtask.model.envelope import Task
from streamtask.worker import Worker
from streamtask.worker.runners import ThreadRunner


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return bench_latency._percentile(ordered, q) if ordered else float("nan")


class Notes:
    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        self.created: dict[int, float] = {}
        self.submitted: dict[int, float] = {}
        self.started: dict[int, float] = {}


def _number(payload: bytes) -> int:
    return int.from_bytes(payload[:8], "big")


def instrument(worker: Worker, notes: Notes) -> None:
    intake = worker._intake
    receive = intake._receive

    def receiving(messages: list[Any]) -> list[Any]:
        now = time.time()
        for message in messages:
            value = message.value()
            if value is None:
                continue
            task = worker.app.codec.decode(value)
            n = _number(task.payload["data"])
            notes.received[n] = now
            notes.created[n] = message.timestamp()[1] / 1000
        return receive(messages)

    intake._receive = receiving  # type: ignore[method-assign]
    submit = ThreadRunner.submit

    def submitting(self: ThreadRunner, token: object, handler: Callable[[Any], Any],
                   task: Any) -> None:
        notes.submitted[_number(task.payload["data"])] = time.time()
        submit(self, token, handler, task)

    ThreadRunner.submit = submitting  # type: ignore[method-assign]


class Waits:
    """Wall time the loop spent in each (possibly blocking) client or queue call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.last_take = 0.0
        self.gaps: list[float] = []
        """Per record an input consume returned without waiting: the time since the loop's
        previous input consumer call returned (the most it can have waited, unseen)."""

    def timed(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timing(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = None
            try:
                result = call(*args, **kwargs)
                return result
            finally:
                ended = time.perf_counter()
                self.seconds[name] = self.seconds.get(name, 0.0) + ended - started
                self.calls[name] = self.calls.get(name, 0) + 1
                if name.startswith("input consumer"):
                    self._taken(name, started, ended, result)

        return timing

    def _taken(self, name: str, started: float, ended: float, result: Any) -> None:
        count = len(result) if isinstance(result, list) else int(result is not None)
        if name.endswith(".consume") and count and self.last_take:
            self.gaps.extend([started - self.last_take] * count)
        elif name.endswith(".poll") and count:
            self.gaps.append(0.0)  # a blocking poll returns on the record's arrival
        self.last_take = ended

    def print(self, wall: float) -> None:
        gaps = [g * 1000 for g in self.gaps]
        print(f"records taken by the input consumer: {len(gaps)}; unseen wait bound (ms): "
              + " ".join(f"p{int(q * 100)} {_pct(gaps, q):.3f}" for q in (0.5, 0.9, 0.99))
              + f" mean {sum(gaps) / max(1, len(gaps)):.3f}")
        print(f"loop wall time {wall:.1f} s; time in each call (share of wall, calls, mean ms):")
        for name, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            calls = self.calls[name]
            print(f"  {name:32} {100 * seconds / wall:5.1f} %  {calls:8}  "
                  f"{1000 * seconds / calls:6.3f}")


class _Proxy:
    def __init__(self, client: Any, waits: Waits, prefix: str, names: tuple[str, ...]) -> None:
        self._client = client
        for name in names:
            setattr(self, name, waits.timed(f"{prefix}.{name}", getattr(client, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class TimingTransport(kafka.KafkaTransport):
    def __init__(self, waits: Waits) -> None:
        self.waits = waits
        self.consumers = 0

    def consumer(self, settings: Any, group: str, **overrides: Any) -> Any:
        self.consumers += 1
        label = "input" if self.consumers == 1 else "retry"
        return _Proxy(kafka.consumer(settings, group, **overrides), self.waits,
                      f"{label} consumer", ("poll", "consume"))

    def producer(self, settings: Any, **overrides: Any) -> Any:
        return _Proxy(kafka.producer(settings, **overrides), self.waits, "producer", ("poll",))


class _TimedQueue:
    def __init__(self, queue: Any, waits: Waits) -> None:
        self.put = queue.put
        self.get = waits.timed("completions.get(timeout)", queue.get)
        self.get_nowait = waits.timed("completions.get_nowait", queue.get_nowait)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-b", "--bootstrap", required=True)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--side", choices=("streamtask", "raw"), default="streamtask")
    parser.add_argument("--handler-ms", type=float, default=0.0,
                        help="streamtask side: each handler sleeps this long (real work)")
    args = parser.parse_args()
    tasks = int(args.rate * args.seconds)
    notes = Notes()
    if args.side == "raw":
        report(notes, run_raw(args.bootstrap, args.rate, tasks, notes), args.rate)
        return

    def noop(task: Task) -> Any:
        notes.started[_number(task.payload["data"])] = time.time()
        if args.handler_ms:
            time.sleep(args.handler_ms / 1000)
        return task.payload

    app = bench_peers.peers_app(f"breakdown-{uuid.uuid4().hex[:8]}", args.bootstrap, noop)
    ensure(app)
    group = app.get_stage(bench.WORK).group
    with tempfile.TemporaryFile() as stderr:
        sender = bench_latency._Sender(bench.RunSpec(
            "sender", "streamtask", args.bootstrap, app.name, group, tasks + 1, 8,
            rate=args.rate), stderr)
        try:
            waits = Waits()
            app.transport = TimingTransport(waits)
            worker = Worker(app, [bench.WORK], WorkerSettings())
            worker._scheduler._completions = _TimedQueue(  # type: ignore[assignment]
                worker._scheduler._completions, waits)
            instrument(worker, notes)

            def on_event(event: Event, _fields: dict[str, Any]) -> None:
                if event is Event.PARTITIONS_ASSIGNED:
                    sender.go()

            worker.events.subscribe(on_event, inline=True)
            began, cpu = time.perf_counter(), bench.cpu_seconds()
            worker.run(max_tasks=tasks + 1)
            wall = time.perf_counter() - began
            print(f"worker process CPU: {100 * (bench.cpu_seconds() - cpu) / wall:.1f} % "
                  f"of one core over {wall:.1f} s")
            sent = sender.result()
        finally:
            sender.close()
            bench.delete_topics(app)
    report(notes, sent, args.rate)
    waits.print(wall)


class _NotedLoop(bench_latency._LatencyLoop):
    """The raw loop with the same notes (received = consume/poll returned it)."""

    def __init__(self, spec: bench.RunSpec, topics: tuple[str, str], notes: Notes,
                 sender: bench_latency._Sender) -> None:
        super().__init__(spec, topics, bench_latency._Starts(bench.Clock()))
        self.notes, self.sender = notes, sender
        echo = self.echo

        def noting(task: dict[str, Any]) -> dict[str, Any]:
            n = _number(task["payload"])
            notes.started[n] = notes.submitted[n] = time.time()
            return echo(task)

        self.echo = noting

    def _take(self) -> list[Any]:
        messages = super()._take()
        now = time.time()
        for message in messages:
            record = cast(dict[str, Any],
                          schemaless_reader(io.BytesIO(message.value()), self.reader, None))
            n = _number(record["payload"])
            self.notes.received[n] = now
            self.notes.created[n] = message.timestamp()[1] / 1000
        return messages

    def _assigned(self, _consumer: Any, _partitions: list[Any]) -> None:
        self.sender.go()


def run_raw(bootstrap: str, rate: float, tasks: int, notes: Notes) -> bench.RunResult:
    app = bench_peers.peers_app(f"breakdown-{uuid.uuid4().hex[:8]}", bootstrap)
    ensure(app)
    group = bench_peers.group_of(app, "raw")
    topics = (app.get_stage(bench.WORK).topic, app.get_stage(bench.SINK).topic)
    with tempfile.TemporaryFile() as stderr:
        sender = bench_latency._Sender(bench.RunSpec(
            "sender", "raw", bootstrap, app.name, group, tasks + 1, 8, rate=rate), stderr)
        try:
            spec = bench.RunSpec("latency", "raw", bootstrap, app.name, group, tasks + 1, 8)
            _NotedLoop(spec, topics, notes, sender).run(tasks + 1)
            return sender.result()
        finally:
            sender.close()
            bench.delete_topics(app)


def report(notes: Notes, sent: bench.RunResult, rate: float) -> None:
    t0, interval = sent.extra["t0"], sent.extra["interval"]
    warmup = int(rate)
    ns = [n for n in notes.started if n > warmup]
    steps = {
        "created - intended (sender lag, ms-rounded)":
            [notes.created[n] - (t0 + n * interval) for n in ns],
        "received - created (broker, fetch, loop)":
            [notes.received[n] - notes.created[n] for n in ns],
        "submitted - received (decode, lanes, ready)":
            [notes.submitted[n] - notes.received[n] for n in ns],
        "started - submitted (hand-off to a thread)":
            [notes.started[n] - notes.submitted[n] for n in ns],
        "started - intended (total)":
            [notes.started[n] - (t0 + n * interval) for n in ns],
    }
    print(f"{len(ns)} tasks at {rate:,.0f}/s (sender p99 lag {sent.extra['send_lag_p99_ms']} ms)")
    print(f"{'step':48} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>8}  (ms)")
    for name, values in steps.items():
        ms = [v * 1000 for v in values]
        print(f"{name:48} " + " ".join(f"{_pct(ms, q):8.2f}"
                                         for q in (0.5, 0.9, 0.99, 0.999, 1.0)))


if __name__ == "__main__":
    main()
