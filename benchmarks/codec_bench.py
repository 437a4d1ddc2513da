"""Per-task codec cost of a pass-through stage, as the worker pays it (no Kafka).

One step is what the worker does for each task of the ``peers`` scenario's no-op stage:
decode the received record, build the child task of ``then=`` from the handler's result
(the payload, returned unchanged) and encode it. Also timed alone: the decode, the child's
``Task.new``, and the encode. The content is the peers scenario's: a 100-byte Blob payload,
3 headers, a 32-digit id.

Run it against two checkouts in alternation to compare them (``PYTHONPATH=OTHER_CHECKOUT``
puts the other version first); each run prints medians of ``--rounds`` rounds, in µs::

    python benchmarks/codec_bench.py [--rounds 9] [--iterations 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

from streamtask.envelope import EnvelopeCodec, Task
from streamtask.schema_registry import default_registry

BLOB = {"type": "record", "name": "Blob", "namespace": "bench",
        "fields": [{"name": "data", "type": "bytes"}]}
HEADERS = {"tenant": "acme", "source": "bench", "trace": "000000000001"}


def _steps() -> dict[str, Callable[[], object]]:
    registry = default_registry()
    blob = registry.register(BLOB)
    codec = EnvelopeCodec(registry, {"work": blob, "sink": blob})
    record = codec.encode(Task.new("work", {"data": os.urandom(100)}, headers=HEADERS))
    decoded = codec.decode(record)
    decode, encode, new = codec.decode, codec.encode, Task.new

    def child_of(task: Task) -> Task:
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
    start = time.perf_counter()
    for _ in range(iterations):
        op()
    return (time.perf_counter() - start) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="print medians as JSON")
    args = parser.parse_args()
    steps = _steps()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, op in steps.items():
            times[name].append(_time(op, args.iterations))
    medians = {name: round(statistics.median(values), 3) for name, values in times.items()}
    if args.json:
        print(json.dumps(medians))
        return
    for name, value in medians.items():
        print(f"{name}: {value:.2f} µs")


if __name__ == "__main__":
    main()
