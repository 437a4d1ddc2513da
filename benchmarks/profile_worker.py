"""Where does a side's time go per task? The peers drain, recorded by a sampling profiler.

Fills a fresh topic exactly as ``streamtask bench --scenario peers`` does, then drains it in
the same child process the benchmark uses, run under ``py-spy record --format raw --threads``
(py-spy is not a dependency: ``pip install py-spy`` first; it needs ptrace, as root or with
``kernel.yama.ptrace_scope=0``). Prints the functions with the most self time (the frame a
sample was taken in, C calls counted in their Python caller) over the drain, as shares of
all drain samples, and the inclusive share of the parts every task passes through.

    python benchmarks/profile_worker.py -b 127.0.0.1:9092 [--side streamtask] [--tasks 200000]

Samples outside the drain (imports, group join, the final close) are left out: only stacks
inside the side's loop or its handler threads count. py-spy's ``--gil`` is off, so a thread
running C code without the interpreter lock (fastavro, ``produce``) is counted too.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import uuid
from pathlib import Path

from streamtask import bench, bench_peers
from streamtask.topics import ensure

# A sample belongs to the drain when its stack passes through one of these frames.
DRAIN_FRAMES = {
    "streamtask": ("_loop (streamtask/worker.py", "_work (streamtask/runner.py"),
    "raw": ("run (streamtask/bench_peers.py",),
    "quix": ("_run_dataframe (quixstreams/app.py",),
}
# Inclusive shares worth knowing for the redesign: (label, frame prefix).
PARTS = [
    ("consume/poll (librdkafka fetch, in C)", ("consume (", "poll (")),
    ("envelope decode", ("decode (streamtask/envelope.py",)),
    ("envelope encode", ("encode (streamtask/envelope.py",)),
    ("produce", ("produce (",)),
    ("events emitted", ("emit (streamtask/events.py",)),
    ("handler threads", ("_work (streamtask/runner.py",)),
    ("fastavro read", ("schemaless_reader (",)),
    ("fastavro write", ("schemaless_writer (",)),
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
                                             "--rate", str(rate), "--output", str(out), "--"])
        print(f"{side}: {result.rate:,.0f} tasks/s, {result.cpu_us_per_task:.1f} µs CPU/task "
              "(slowed by the sampling)")
    finally:
        bench.delete_topics(app)


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    return stack.split(";"), int(count)


def _short(frame: str) -> str:
    """``name (path/to/module.py:line)`` -> ``name (module.py)``: lines merged."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def report(side: str, profile: Path, top: int) -> None:
    wanted = DRAIN_FRAMES[side]
    self_time: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in profile.read_text().splitlines():
        frames, count = _frames(line)
        if not any(f.startswith(w) or f" {w}" in f for f in frames for w in wanted):
            continue
        total += count
        self_time[_short(frames[-1])] += count
        for label, prefixes in PARTS:
            if any(f.startswith(p) for f in frames for p in prefixes):
                parts[label] += count
    print(f"{side}: {total} drain samples")
    print("top self time:")
    for name, count in self_time.most_common(top):
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.profile or Path(tmp) / "profile.txt"
        record(args.bootstrap, args.side, args.tasks, args.rate, out)
        report(args.side, out, args.top)


if __name__ == "__main__":
    main()
