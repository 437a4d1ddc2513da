"""Schema evolution in both directions, for payload schemas and for the envelope itself.

Every version a peer may write is registered (by fingerprint); each side reads with the
version it knows, and Avro resolution bridges the two.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtask.errors import DecodeError
from streamtask.model.envelope import EnvelopeCodec, Task
from streamtask.model.registry import Schema, SchemaRegistry, default_registry

INT32 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)

RESIZE_V2 = {
    "type": "record", "name": "ResizeRequest", "namespace": "photos",
    "fields": [
        {"name": "photo_id", "type": "string"},
        {"name": "width", "type": "int"},
        {"name": "height", "type": "int"},
        {"name": "quality", "type": "int", "default": 85},
        {"name": "format", "type": ["null", "string"], "default": None},
    ],
}


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    registry = default_registry()
    registry.register(RESIZE_V2)
    return registry


@pytest.fixture(scope="module")
def v1(registry: SchemaRegistry) -> Schema:
    return v1_in(registry)


@pytest.fixture(scope="module")
def v2(registry: SchemaRegistry) -> Schema:
    return registry.get("photos.ResizeRequest")


def v1_in(registry: SchemaRegistry) -> Schema:
    """The bundled (first) ResizeRequest, as held by ``registry``."""
    held = registry.by_fingerprint(default_registry().get("photos.ResizeRequest").fingerprint)
    assert held is not None
    return held


def codec_for(registry: SchemaRegistry, payload: Schema) -> EnvelopeCodec:
    return EnvelopeCodec(registry, {"resize": payload})


# --- payload schemas -------------------------------------------------------------------------

@settings(deadline=None)
@given(photo_id=TEXT, width=INT32, height=INT32)
def test_old_payload_writer_new_reader_fills_defaults(
        registry: SchemaRegistry, v1: Schema, v2: Schema,
        photo_id: str, width: int, height: int) -> None:
    old = Task.new("resize", {"photo_id": photo_id, "width": width, "height": height})
    decoded = codec_for(registry, v2).decode(codec_for(registry, v1).encode(old))
    assert decoded.payload == {"photo_id": photo_id, "width": width, "height": height,
                               "quality": 85, "format": None}
    assert decoded.with_(payload=old.payload) == old


@settings(deadline=None)
@given(photo_id=TEXT, width=INT32, height=INT32, quality=INT32, fmt=st.none() | TEXT)
def test_new_payload_writer_old_reader_drops_added_fields(
        registry: SchemaRegistry, v1: Schema, v2: Schema,
        photo_id: str, width: int, height: int, quality: int, fmt: str | None) -> None:
    payload = {"photo_id": photo_id, "width": width, "height": height,
               "quality": quality, "format": fmt}
    new = Task.new("resize", payload)
    decoded = codec_for(registry, v1).decode(codec_for(registry, v2).encode(new))
    assert decoded.payload == {"photo_id": photo_id, "width": width, "height": height}


def test_registry_decode_resolves_and_reports_the_writer(
        registry: SchemaRegistry, v1: Schema, v2: Schema) -> None:
    data = registry.encode(v1, {"photo_id": "p", "width": 1, "height": 2})
    record, writer = registry.decode(data, reader=v2)
    assert writer is v1
    assert record == {"photo_id": "p", "width": 1, "height": 2, "quality": 85, "format": None}
    assert registry.decode(data) == ({"photo_id": "p", "width": 1, "height": 2}, v1)


def test_int_promotes_to_long_but_not_back(v1: Schema) -> None:
    wide = copy.deepcopy(v1.definition)
    wide["fields"][1]["type"] = "long"
    local = default_registry()
    long_v = local.register(wide)
    data = local.encode(v1_in(local), {"photo_id": "p", "width": 2**31 - 1, "height": 1})
    assert local.decode(data, reader=long_v)[0]["width"] == 2**31 - 1
    wide_data = local.encode(long_v, {"photo_id": "p", "width": 2**40, "height": 1})
    with pytest.raises(DecodeError, match=r"photos\.ResizeRequest"):
        local.decode(wide_data, reader=v1_in(local))


def test_undeclared_type_decodes_payload_with_its_writer_schema(
        registry: SchemaRegistry, v2: Schema) -> None:
    payload = {"photo_id": "p", "width": 1, "height": 2, "quality": 50, "format": "webp"}
    data = codec_for(registry, v2).encode(Task.new("resize", payload))
    assert EnvelopeCodec(registry).decode(data).payload == payload


# --- the envelope ----------------------------------------------------------------------------

def envelope_definition(registry: SchemaRegistry) -> dict[str, Any]:
    return copy.deepcopy(registry.get("streamtask.Envelope").definition)


def older_envelope(registry: SchemaRegistry) -> dict[str, Any]:
    """An envelope from before headers, parent_id and pipeline_version existed."""
    definition = envelope_definition(registry)
    dropped = {"headers", "parent_id", "pipeline_version"}
    definition["fields"] = [f for f in definition["fields"] if f["name"] not in dropped]
    return definition


def newer_envelope(registry: SchemaRegistry) -> dict[str, Any]:
    """An envelope from a future version with two more fields."""
    definition = envelope_definition(registry)
    definition["fields"] += [
        {"name": "priority", "type": "int", "default": 0},
        {"name": "deadline", "type": ["null", {"type": "long",
                                               "logicalType": "timestamp-millis"}],
         "default": None},
    ]
    return definition


def single_object(schema: Schema, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(schema.header)
    schemaless_writer(buf, parse_schema(schema.definition), record)
    return buf.getvalue()


def base_record(registry: SchemaRegistry) -> dict[str, Any]:
    payload = registry.encode(registry.get("streamtask.JsonPayload"), {"json": '{"n": 1}'})
    return {"task_id": "t1", "task_type": "count", "payload": payload, "key": "k",
            "attempt": 3, "created_at": 1_700_000_000_000, "not_before": 1_700_000_005_000,
            "run_id": "r1"}


def test_old_envelope_writer_current_reader() -> None:
    registry = default_registry()
    old = registry.register(older_envelope(registry))
    data = single_object(old, base_record(registry))
    task = EnvelopeCodec(registry).decode(data)
    assert task == Task("t1", "count", {"n": 1}, key="k", attempt=3,
                        created_at=1_700_000_000_000, not_before=1_700_000_005_000,
                        run_id="r1", parent_id=None, headers={}, pipeline_version=None)
    assert type(task.created_at) is int and type(task.not_before) is int
    assert EnvelopeCodec(registry).decode(data) == task  # second read uses the cached reader


def test_newer_envelope_writer_current_reader_ignores_unknown_fields() -> None:
    registry = default_registry()
    codec = EnvelopeCodec(registry)
    newer = registry.register(newer_envelope(registry))
    record = {**base_record(registry), "parent_id": "p0", "headers": {"h": "v"},
              "pipeline_version": 4, "priority": 9, "deadline": 1_700_000_009_000}
    task = codec.decode(single_object(newer, record))
    assert (task.id, task.parent_id, task.headers, task.pipeline_version) == (
        "t1", "p0", {"h": "v"}, 4)
    assert task.payload == {"n": 1} and task.not_before == 1_700_000_005_000


def test_current_envelope_writer_old_reader() -> None:
    registry = default_registry()
    old = registry.register(older_envelope(registry))
    task = Task.new("count", {"n": 2}, key="k", parent_id="p", headers={"a": "b"})
    data = EnvelopeCodec(registry).encode(task.with_(pipeline_version=7))
    record, writer = registry.decode(data, reader=old)
    assert writer.fingerprint != old.fingerprint
    assert set(record) == {f["name"] for f in old.definition["fields"]}
    assert (record["task_id"], record["key"], record["run_id"]) == (task.id, "k", task.id)


def test_current_envelope_writer_newer_reader_gets_defaults() -> None:
    registry = default_registry()
    codec = EnvelopeCodec(registry)
    newer = registry.register(newer_envelope(registry))
    record, _ = registry.decode(codec.encode(Task.new("count", 1)), reader=newer)
    assert record["priority"] == 0 and record["deadline"] is None
