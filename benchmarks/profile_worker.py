"""Where does a side's time go per task? The peers drain, recorded by a sampling profiler.

Fills a fresh topic exactly as ``streamtask bench --scenario peers`` does, then drains it in
the same child process the benchmark uses, run under ``py-spy record --format raw --threads``
(py-spy is not a dependency: ``pip install py-spy`` first; it needs ptrace, as root or with
``kernel.yama.ptrace_scope=0``). With ``--gil`` a sample is taken only from the thread that
holds the interpreter lock, so the shares are shares of the interpreter's time, the resource
a GIL-bound worker runs out of (a handler thread blocked on its queue, or librdkafka's own
threads, do not count). Prints the functions with the most self time (the frame a sample was
taken in; C calls such as fastavro's count in their Python caller), by function and by line,
and the inclusive share of the parts every task passes through.

    python benchmarks/profile_worker.py -b 127.0.0.1:9092 [--side streamtask] [--tasks 200000]

Samples outside the drain (imports, group join, the final close) are left out: only stacks
inside the side's loop or its handler threads count.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import uuid
from pathlib import Path

from streamtask.dev import bench, bench_peers
from streamtask.kafka.topics import ensure

# A sample belongs to the drain when its stack passes through one of these frames.
DRAIN_FRAMES = {
    "streamtask": ("._loop (streamtask/worker/worker.py",
                   "ThreadRunner._work (streamtask/worker/runners.py"),
    "raw": ("BareLoop.run (streamtask/dev/bench_peers.py",),
    "quix": ("._run_dataframe (quixstreams/app.py",),
}
# Inclusive shares worth knowing for the redesign: (label, substrings of a frame). C calls
# (librdkafka, fastavro) have no frame of their own: they count in the line that calls them,
# which the by-line listing shows.
PARTS = [
    ("worker: poll + decode + accept (intake)", ("Worker._poll (",)),
    ("worker: start ready tasks (hand-off to threads)", ("Worker._start_ready (",)),
    ("worker: collect outcomes + route + produce", ("Worker._collect_outcomes (",)),
    ("worker: producer.poll (delivery callbacks)", ("Worker._on_delivery", "_delivered (")),
    ("worker: commit", ("Worker._commit (",)),
    ("handler threads (ThreadRunner._work)", ("ThreadRunner._work (",)),
    ("envelope decode (EnvelopeCodec.decode)", ("EnvelopeCodec.decode (",)),
    ("envelope encode (EnvelopeCodec.encode)", ("EnvelopeCodec.encode (",)),
    ("outcomes.py (outcome -> records)", ("(streamtask/worker/outcomes.py",)),
    ("pipeline.py (next tasks)", ("(streamtask/model/pipeline.py",)),
    ("events emitted (EventBus.emit)", ("EventBus.emit (",)),
    ("offsets.py (per-partition tracking)", ("(streamtask/worker/offsets.py",)),
    ("lanes.py (key lanes)", ("(streamtask/worker/lanes.py",)),
    ("Task.new / dataclass init", ("Task.new (", "Task.__init__ (")),
]


def record(bootstrap: str, side: bench.Side, tasks: int, rate: int, out: Path) -> None:
    app = bench_peers.peers_app(f"profile-{side}-{uuid.uuid4().hex[:8]}", bootstrap)
    ensure(app)
    group = bench_peers.group_of(app, side)
    try:
        bench_peers.fill_for(app, side, tasks)
        spec = bench.RunSpec("peers", side, bootstrap, app.name, group, tasks, 8)
        spy = str(Path(sys.executable).with_name("py-spy"))
        result = bench.spawn_run(spec, wrap=[spy, "record", "--format", "raw", "--threads",
                                             "--gil", "--rate", str(rate), "--output", str(out),
                                             "--"])
        print(f"{side}: {result.rate:,.0f} tasks/s, {result.cpu_us_per_task:.1f} µs CPU/task "
              "(slowed by the sampling)")
    finally:
        bench.delete_topics(app)


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    return stack.split(";"), int(count)


def _short(frame: str, line: bool = False) -> str:
    """``name (path/to/module.py:line)`` -> ``name (module.py)``, lines merged unless ``line``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")")
    if not line:
        path = path.rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def _drain_samples(side: str, profile: Path) -> list[tuple[list[str], int]]:
    wanted = DRAIN_FRAMES[side]
    samples = [_frames(line) for line in profile.read_text().splitlines()]
    return [(frames, count) for frames, count in samples
            if any(w in f for f in frames for w in wanted)]


def report(side: str, profile: Path, top: int) -> None:
    samples = _drain_samples(side, profile)
    by_function: collections.Counter[str] = collections.Counter()
    by_line: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    total = sum(count for _, count in samples)
    for frames, count in samples:
        by_function[_short(frames[-1])] += count
        by_line[_short(frames[-1], line=True)] += count
        for label, needles in PARTS:
            if any(n in f for f in frames for n in needles):
                parts[label] += count
    print(f"{side}: {total} drain samples")
    for title, counter in (("self time by function", by_function),
                           ("self time by line (C calls count in their caller)", by_line)):
        print(title + ":")
        for name, count in counter.most_common(top):
            print(f"  {100 * count / total:5.1f} %  {name}")
    print("inclusive:")
    for label, _ in PARTS:
        if parts[label]:
            print(f"  {100 * parts[label] / total:5.1f} %  {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--side", choices=bench_peers.PEER_SIDES, default="streamtask")
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--profile", type=Path, help="keep the raw profile here "
                        "(collapsed stacks, e.g. for speedscope or flamegraph.pl)")
    parser.add_argument("--report-only", action="store_true",
                        help="only summarise an existing --profile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.profile or Path(tmp) / "profile.txt"
        if not args.report_only:
            record(args.bootstrap, args.side, args.tasks, args.rate, out)
        report(args.side, out, args.top)


if __name__ == "__main__":
    main()
