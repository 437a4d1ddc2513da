"""Per-task codec cost of a pass-through stage, as the worker pays it (no Kafka).

One step is what the worker does for each task of the ``peers`` scenario's no-op stage:
decode the received record, build the child task of ``then=`` from the handler's result
(the payload, returned unchanged) and encode it. Also timed alone: the decode, the child's
``Task.new``, and the encode. The content is the peers scenario's: a 100-byte Blob payload,
3 headers, a 32-digit id. Times are the process's CPU time (steadier than wall time on a
shared box), µs per step, medians of ``--rounds`` rounds.

``--baseline DIR`` also loads the streamtask package found in DIR (e.g. an exported older
commit: ``git archive COMMIT streamtask schemas | tar -x -C DIR``) and times both in
alternation within each round, printing the median of the per-round ratios new / baseline::

    python benchmarks/codec_bench.py [--rounds 9] [--iterations 20000] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

BLOB = {"type": "record", "name": "Blob", "namespace": "bench",
        "fields": [{"name": "data", "type": "bytes"}]}
HEADERS = {"tenant": "acme", "source": "bench", "trace": "000000000001"}
Steps = dict[str, Callable[[], object]]


def _import_envelope(tree: str | None) -> ModuleType:
    """``streamtask.model.envelope`` from ``tree``, or the installed one when None.

    The modules of a previous import are dropped from ``sys.modules`` first; the objects
    already taken from them keep working, since their functions hold their own globals.
    An editable install's import hook is set aside while importing from ``tree``.
    """
    for name in [m for m in sys.modules if m == "streamtask" or m.startswith("streamtask.")]:
        del sys.modules[name]
    saved_meta, saved_path = sys.meta_path[:], sys.path[:]
    if tree is not None:
        sys.meta_path[:] = [f for f in sys.meta_path
                            if "__editable__" not in getattr(f, "__module__", "")]
        sys.path.insert(0, tree)
    try:
        return importlib.import_module("streamtask.model.envelope")
    finally:
        sys.meta_path[:], sys.path[:] = saved_meta, saved_path


def _steps(envelope: Any) -> Steps:
    registry = importlib.import_module("streamtask.model.registry").default_registry()
    blob = registry.register(BLOB)
    codec = envelope.EnvelopeCodec(registry, {"work": blob, "sink": blob})
    task_class = envelope.Task
    record = codec.encode(task_class.new("work", {"data": os.urandom(100)}, headers=HEADERS))
    decoded = codec.decode(record)
    decode, encode, new = codec.decode, codec.encode, task_class.new

    def child_of(task: Any) -> Any:
        return new("sink", task.payload, key=task.key, run_id=task.run_id,
                   parent_id=task.id, headers=task.headers,
                   pipeline_version=task.pipeline_version)

    child = child_of(decoded)
    return {
        "decode + child + encode": lambda: encode(child_of(decode(record))),
        "decode": lambda: decode(record),
        "child Task.new": lambda: child_of(decoded),
        "encode child": lambda: encode(child),
    }


def _time(op: Callable[[], object], iterations: int) -> float:
    start = time.process_time()
    for _ in range(iterations):
        op()
    return (time.process_time() - start) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--baseline", help="a directory holding another streamtask package")
    args = parser.parse_args()
    sides = {"new": _steps(_import_envelope(None))}
    if args.baseline:
        sides["baseline"] = _steps(_import_envelope(args.baseline))
        _import_envelope(None)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for step in sides["new"]:
            for side, steps in sides.items():
                times.setdefault((side, step), []).append(_time(steps[step], args.iterations))
    for step in sides["new"]:
        line = f"{step}: " + ", ".join(
            f"{side} {statistics.median(times[side, step]):.2f} µs" for side in sides)
        if args.baseline:
            ratios = [n / b for n, b in zip(times["new", step], times["baseline", step],
                                            strict=True)]
            line += f"; new / baseline {statistics.median(ratios):.2f}"
        print(line)


if __name__ == "__main__":
    main()
