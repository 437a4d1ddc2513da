"""Cheap probes behind the ranked list of worker changes in results.md (no Kafka).

Each probe times two ways of doing one per-task step, interleaved in rounds so that drift in
machine speed hits both alike, and prints the median of the per-round ratios:

- reading / writing today's envelope against the same fields without nullable unions
  (absent = "" or 0), as a v2 envelope might;
- constructing a ``Task``-shaped frozen dataclass against a plain ``__slots__`` class;
- encoding the peers scenario's result payload with and without fastavro's validation.

    python benchmarks/redesign_probes.py [--rounds 9] [--iterations 20000]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streamtask.model.envelope import Task
from streamtask.model.registry import BUNDLED_SCHEMAS_DIR, default_registry


def _plain_envelope() -> dict[str, Any]:
    definition = json.loads((BUNDLED_SCHEMAS_DIR / "streamtask.Envelope.avsc").read_text())
    def plain(t: Any) -> Any:  # timestamp-millis read as a long, as the codec does
        return t["type"] if isinstance(t, dict) and "logicalType" in t else t

    for f in definition["fields"]:
        f["type"] = ([plain(b) for b in f["type"]] if isinstance(f["type"], list)
                     else plain(f["type"]))
    return dict(definition)


def _without_unions(definition: dict[str, Any]) -> dict[str, Any]:
    fields = [{"name": f["name"], "type": f["type"][1] if isinstance(f["type"], list)
               else f["type"]} for f in definition["fields"]]
    return {"type": "record", "name": "EnvelopeV2", "namespace": "probe", "fields": fields}


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenTask:
    id: str
    type: str
    payload: Any
    key: str | None = None
    attempt: int = 1
    created_at: int = 0
    not_before: int | None = None
    run_id: str = ""
    parent_id: str | None = None
    headers: Any = None
    pipeline_version: int | None = None

    def __post_init__(self) -> None:
        if not self.run_id:
            object.__setattr__(self, "run_id", self.id)


class PlainTask:
    __slots__ = ("attempt", "created_at", "headers", "id", "key", "not_before", "parent_id",
                 "payload", "pipeline_version", "run_id", "type")

    def __init__(self, id: str, type: str, payload: Any, key: str | None = None,
                 attempt: int = 1, created_at: int = 0, not_before: int | None = None,
                 run_id: str = "", parent_id: str | None = None, headers: Any = None,
                 pipeline_version: int | None = None) -> None:
        self.id, self.type, self.payload, self.key = id, type, payload, key
        self.attempt, self.created_at, self.not_before = attempt, created_at, not_before
        self.run_id = run_id or id
        self.parent_id, self.headers, self.pipeline_version = parent_id, headers, pipeline_version


def _probes() -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    v1_def = _plain_envelope()
    v1, v2 = parse_schema(v1_def), parse_schema(_without_unions(v1_def))
    headers = {"tenant": "acme", "source": "bench", "trace": "000000000001"}
    rec1 = {"task_id": "a" * 32, "task_type": "work", "payload": b"x" * 111, "key": None,
            "attempt": 1, "created_at": 1_764_680_000_000, "not_before": None,
            "run_id": "b" * 32, "parent_id": None, "headers": headers,
            "pipeline_version": None}
    rec2 = {**rec1, "key": "", "not_before": 0, "parent_id": "", "pipeline_version": 0}
    d1, d2 = io.BytesIO(), io.BytesIO()
    schemaless_writer(d1, v1, rec1)
    schemaless_writer(d2, v2, rec2)
    b1, b2 = d1.getvalue(), d2.getvalue()
    registry = default_registry()
    blob = registry.register({"type": "record", "name": "Blob", "namespace": "probe",
                              "fields": [{"name": "data", "type": "bytes"}]})
    payload = {"data": bytes(100)}
    return {
        "envelope read, no unions / today": (
            lambda: schemaless_reader(io.BytesIO(b2), v2, None),
            lambda: schemaless_reader(io.BytesIO(b1), v1, None)),
        "envelope write, no unions / today": (
            lambda: schemaless_writer(io.BytesIO(), v2, rec2),
            lambda: schemaless_writer(io.BytesIO(), v1, rec1)),
        "task init, plain __slots__ class / frozen dataclass": (
            lambda: PlainTask("a", "work", payload, created_at=1, headers=headers),
            lambda: FrozenTask("a", "work", payload, created_at=1, headers=headers)),
        "payload encode, no validation / validated": (
            lambda: registry.encode(blob, payload, validate=False),
            lambda: registry.encode(blob, payload, validate=True)),
        "Task.new (today's Task) / frozen probe": (
            lambda: Task.new("work", payload, headers=headers),
            lambda: FrozenTask("a", "work", payload, created_at=1, headers=headers)),
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
    args = parser.parse_args()
    for name, (new, old) in _probes().items():
        ratios, news, olds = [], [], []
        for _ in range(args.rounds):
            news.append(_time(new, args.iterations))
            olds.append(_time(old, args.iterations))
            ratios.append(news[-1] / olds[-1])
        print(f"{name}: {statistics.median(ratios):.2f} "
              f"({statistics.median(news):.2f} vs {statistics.median(olds):.2f} µs)")


if __name__ == "__main__":
    main()
