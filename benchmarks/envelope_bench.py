"""How much the envelope codec costs over bare fastavro.

One operation is encode + decode of a task carrying a ``photos.ResizeRequest`` payload. The
baseline does the same Avro work with fastavro alone: write the payload body, write the
envelope body around it, read both back, with no header, fingerprint lookup, validation or
Task construction. Variants run interleaved in rounds so drift in machine speed hits them
alike; the ratio printed is the median of the per-round ratios.

    python benchmarks/envelope_bench.py [--iterations 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streamtask.model.envelope import ENVELOPE_V2, EnvelopeCodec, Task
from streamtask.model.registry import BUNDLED_SCHEMAS_DIR, default_registry

PAYLOAD = {"photo_id": "3f1c9a7e-photo", "width": 1280, "height": 720}


def _schema(name: str, *, plain: bool = False) -> Any:
    text = (BUNDLED_SCHEMAS_DIR / f"{name}.avsc").read_text(encoding="utf-8")
    if plain:  # the envelope's timestamps as bare longs: no datetime conversion
        text = text.replace('{"type": "long", "logicalType": "timestamp-millis"}', '"long"')
    return parse_schema(json.loads(text))


def bare_roundtrip(envelope: Any, payload_schema: Any, task: Task) -> Callable[[], Any]:
    """fastavro alone, writing and reading the same two bodies the codec does (envelope v2,
    whose absent fields are "" and 0)."""

    def run() -> Any:
        buf = io.BytesIO()
        schemaless_writer(buf, payload_schema, task.payload)
        record = {
            "task_id": task.id, "task_type": task.type, "payload": buf.getvalue(),
            "key": task.key or "", "attempt": task.attempt, "created_at": task.created_at,
            "not_before": task.not_before or 0, "run_id": task.run_id,
            "parent_id": task.parent_id or "", "headers": task.headers,
            "pipeline_version": task.pipeline_version or 0,
        }
        buf = io.BytesIO()
        schemaless_writer(buf, envelope, record)
        env: Any = schemaless_reader(io.BytesIO(buf.getvalue()), envelope)
        return env, schemaless_reader(io.BytesIO(env["payload"]), payload_schema)

    return run


def codec_roundtrip(codec: EnvelopeCodec, task: Task) -> Callable[[], Any]:
    def run() -> Any:
        return codec.decode(codec.encode(task))

    return run


def _time(fn: Callable[[], Any], iterations: int) -> float:
    """Microseconds per call."""
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    registry = default_registry()
    schemas = {"resize": registry.get("photos.ResizeRequest")}
    task = Task.new("resize", PAYLOAD, key="photo-1", headers={"trace": "abc123"})
    payload_schema = _schema("photos.ResizeRequest")
    variants = {
        "bare fastavro (plain longs)": bare_roundtrip(
            _schema(ENVELOPE_V2, plain=True), payload_schema, task),
        "bare fastavro (timestamp-millis)": bare_roundtrip(
            _schema(ENVELOPE_V2), payload_schema, task),
        "EnvelopeCodec": codec_roundtrip(EnvelopeCodec(registry, schemas), task),
        "EnvelopeCodec validate=False": codec_roundtrip(
            EnvelopeCodec(registry, schemas, validate=False), task),
    }
    assert codec_roundtrip(EnvelopeCodec(registry, schemas), task)() == task
    baseline = next(iter(variants))
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            timings[name].append(_time(fn, args.iterations))

    print(f"{args.rounds} interleaved rounds x {args.iterations} encode+decode round trips")
    for name, runs in timings.items():
        ratio = statistics.median(a / b for a, b in zip(runs, timings[baseline], strict=True))
        print(f"{name:34} {statistics.median(runs):7.2f} us/op   "
              f"median ratio vs {baseline}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
