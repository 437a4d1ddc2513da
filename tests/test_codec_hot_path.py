"""The codec's per-task shortcuts give what the general paths give.

A payload written with its task type's declared schema is decoded without the registry
look-up, a chain's child is built positionally with one clock read, and parsed schemas have
their strings interned: each must be invisible but in CPU.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Any

import pytest

from streamtask import clock
from streamtask.errors import DecodeError
from streamtask.model.envelope import DecodedRecord, EnvelopeCodec, Task, child_task
from streamtask.model.registry import Schema, default_registry, interned

POINT = {"type": "record", "name": "Point", "namespace": "hot",
         "fields": [{"name": "x", "type": "long"}, {"name": "tag", "type": "string"},
                    {"name": "near", "type": ["null", "Point"], "default": None}]}


def _codec() -> tuple[EnvelopeCodec, Schema]:
    registry = default_registry()
    schema = registry.register(POINT)
    return EnvelopeCodec(registry, {"walk": schema}), schema


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_parsed_schemas_hold_only_interned_strings_and_still_resolve_named_types() -> None:
    codec, schema = _codec()
    strings = _strings(schema.parsed)
    assert "long" in strings and "hot.Point" in strings
    assert all(sys.intern(s) is s for s in strings)
    task = Task("t1", "walk", {"x": 1, "tag": "a", "near": {"x": 2, "tag": "b", "near": None}})
    assert codec.decode(codec.encode(task)) == task  # the recursive reference still resolves


def test_interning_keeps_shared_parts_shared_and_terminates_on_cycles() -> None:
    shared: dict[str, Any] = {"type": "string"}
    cyclic: dict[str, Any] = {"a": shared, "b": shared, "list": ["x", shared]}
    cyclic["self"] = cyclic
    assert interned(cyclic) is cyclic
    assert cyclic["a"] is cyclic["b"] is shared and cyclic["self"] is cyclic


def test_a_schema_built_with_str_subclasses_still_parses() -> None:
    class Kind(StrEnum):
        LONG = "long"

    schema = Schema.from_definition({"type": "record", "name": "E", "namespace": "hot",
                                     "fields": [{"name": "n", "type": Kind.LONG}]})
    assert schema.parsed["fields"][0]["type"] == "long"


def test_a_declared_payload_decodes_to_a_record_that_passes_on_as_its_bytes() -> None:
    codec, _ = _codec()
    value = codec.encode(Task("t1", "walk", {"x": 5, "tag": "ü", "near": None}))
    task = codec.decode(value)
    assert type(task.payload) is DecodedRecord and task.payload == {"x": 5, "tag": "ü",
                                                                   "near": None}
    assert codec.encode_payload("walk", task.payload) is task.payload._encoded
    assert task.payload._encoded == codec.encode_payload("walk", dict(task.payload))


def test_a_corrupt_declared_payload_is_still_a_decode_error_naming_the_task() -> None:
    codec, _ = _codec()
    good = codec.encode_payload("walk", {"x": 5, "tag": "a", "near": None})
    envelope = codec.encode(Task("t9", "walk", {"x": 5, "tag": "a", "near": None}))
    corrupt = envelope.replace(good, good + b"\x00")  # a trailing byte inside the payload
    corrupt = corrupt.replace(bytes([2 * len(good)]) + good, bytes([2 * len(good) + 2]) + good)
    with pytest.raises(DecodeError, match=r"task 't9' \(walk\): payload: .*trailing"):
        codec.decode(corrupt)


def test_a_chains_child_is_what_task_new_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "_source", lambda: 1_700_000_000_123_456_789)
    parent = Task("p1", "walk", {"x": 1}, key="k", run_id="r", pipeline_version=3,
                  headers={"h": "v"})
    child = child_task("next", {"y": 2}, parent, parent.headers)
    expected = Task.new("next", {"y": 2}, key="k", id=child.id, run_id="r", parent_id="p1",
                        headers={"h": "v"}, pipeline_version=3)
    assert child == expected and child.created_at == 1_700_000_000_123
    assert child.id.startswith(f"{1_700_000_000_123:012x}") and len(child.id) == 32
    assert child.headers is not parent.headers  # copied, as Task.new copies
    with pytest.raises(AttributeError):
        child.attempt = 2  # type: ignore[misc]
