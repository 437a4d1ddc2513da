"""Envelope version 2 (no nullable unions) and payloads passed on as the bytes they came in.

Version 1 records were written by streamtask releases before version 2 and may still sit on
task, retry and dead-letter topics: they must keep decoding. The two records below are the
exact bytes the codec at commit e72802d (version 1) wrote.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from streamtask.errors import DecodeError, PayloadSchemaError
from streamtask.model.envelope import DecodedRecord, EnvelopeCodec, Task
from streamtask.model.registry import BUNDLED_SCHEMAS_DIR, Schema, SchemaRegistry, default_registry

V1_FULL = bytes.fromhex(
    "c3019e9b8e4aa6b8b4fb4030313930613162326333643465356636303731383239336134623563366437650a"
    "636f756e7432c30108ae736530e4e3101c7b226e223a5b312c22c3bc225d7d02046b310680a0abfef9620290"
    "eeabfef96204723102047031020268027600020e")
"""Task('0190a1b2c3d4e5f60718293a4b5c6d7e', 'count', {'n': [1, 'ü']}, key='k1', attempt=3,
created_at=1700000000000, not_before=1700000005000, run_id='r1', parent_id='p1',
headers={'h': 'v'}, pipeline_version=7), a JSON payload."""
V1_BARE = bytes.fromhex(
    "c3019e9b8e4aa6b8b4fb0474320c726573697a6520c301ceaddce8162603180270800ac007000282a0abfef9"
    "6200047432000000")
"""Task('t2', 'resize', {'photo_id': 'p', 'width': 640, 'height': 480},
created_at=1700000000001): every nullable field null, a declared payload."""

NESTED = {
    "type": "record", "name": "Album", "namespace": "photos",
    "fields": [{"name": "title", "type": "string"},
               {"name": "photos", "type": {"type": "array", "items": "string"}}],
}
RESIZE = {"photo_id": "p", "width": 640, "height": 480}


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    registry = default_registry()
    registry.register(NESTED)
    return registry


@pytest.fixture(scope="module")
def codec(registry: SchemaRegistry) -> EnvelopeCodec:
    resize, album = registry.get("photos.ResizeRequest"), registry.get("photos.Album")
    return EnvelopeCodec(registry, {"resize": resize, "crop": resize, "album": album,
                                    "album2": album})


def v1_schema() -> Schema:
    path = BUNDLED_SCHEMAS_DIR / "streamtask.Envelope.avsc"
    return Schema.from_definition(path.read_text(encoding="utf-8"))


# --- versions ---------------------------------------------------------------------------------

def test_records_written_with_envelope_v1_still_decode(codec: EnvelopeCodec) -> None:
    assert V1_FULL[:10] == v1_schema().header == V1_BARE[:10]
    assert codec.decode(V1_FULL) == Task(
        "0190a1b2c3d4e5f60718293a4b5c6d7e", "count", {"n": [1, "ü"]}, key="k1", attempt=3,
        created_at=1_700_000_000_000, not_before=1_700_000_005_000, run_id="r1",
        parent_id="p1", headers={"h": "v"}, pipeline_version=7)
    bare = codec.decode(V1_BARE)
    assert bare == Task("t2", "resize", RESIZE, created_at=1_700_000_000_001)
    assert (bare.key, bare.not_before, bare.parent_id, bare.pipeline_version) == (
        None, None, None, None)
    assert codec.decode(V1_BARE, attempt=4, not_before=9).attempt == 4  # a retry's overrides


def test_codec_writes_v2_and_reads_its_own_records_back(codec: EnvelopeCodec,
                                                        registry: SchemaRegistry) -> None:
    v2 = registry.get("streamtask.Envelope")
    assert v2.fingerprint != v1_schema().fingerprint
    assert all(not isinstance(f["type"], list) for f in v2.definition["fields"])
    for task in (codec.decode(V1_FULL), codec.decode(V1_BARE)):
        data = codec.encode(task)
        assert data[:10] == v2.header
        assert codec.decode(data) == task
    assert len(codec.encode(codec.decode(V1_BARE))) < len(V1_BARE) + 4


def test_absent_fields_are_written_as_empty_and_zero_and_read_as_none(
        codec: EnvelopeCodec, registry: SchemaRegistry) -> None:
    task = Task("t", "other", None, created_at=1)
    record, _ = registry.decode(codec.encode(task))
    assert (record["key"], record["not_before"].timestamp(), record["parent_id"],
            record["pipeline_version"]) == ("", 0, "", 0)
    assert codec.decode(codec.encode(task)) == task


def test_pipeline_version_zero_is_refused_as_it_would_read_back_as_none(
        codec: EnvelopeCodec) -> None:
    with pytest.raises(PayloadSchemaError, match="pipeline version 0"):
        codec.encode(Task.new("other", None, pipeline_version=0))


def test_a_registry_without_v1_still_decodes_v1_records_it_was_given_the_schema_of() -> None:
    registry = SchemaRegistry()
    for name in ("streamtask.Envelope.v2", "streamtask.JsonPayload", "photos.ResizeRequest"):
        registry.register((BUNDLED_SCHEMAS_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    codec = EnvelopeCodec(registry, {"resize": registry.get("photos.ResizeRequest")})
    assert codec.decode(V1_BARE).payload == RESIZE


def test_an_unknown_later_version_is_read_through_v1s_nullable_shape(
        registry: SchemaRegistry) -> None:
    codec = EnvelopeCodec(registry)
    definition = {**registry.get("streamtask.Envelope").definition}
    definition["fields"] = [*definition["fields"], {"name": "priority", "type": "int",
                                                     "default": 0}]
    later = registry.register(definition)
    payload = registry.encode(registry.get("streamtask.JsonPayload"), {"json": "[1]"})
    record = {"task_id": "t", "task_type": "x", "payload": payload, "key": "", "attempt": 1,
              "created_at": 5, "not_before": 0, "run_id": "", "parent_id": "p",
              "headers": {}, "pipeline_version": 2, "priority": 9}
    buf = io.BytesIO()
    buf.write(later.header)
    schemaless_writer(buf, parse_schema(later.definition), record)
    assert codec.decode(buf.getvalue()) == Task("t", "x", [1], created_at=5, parent_id="p",
                                                pipeline_version=2)


# --- payloads passed on as bytes ---------------------------------------------------------------

def received(codec: EnvelopeCodec, task_type: str, payload: Any) -> tuple[Any, bytes]:
    """The payload as a worker's handler sees it, and the payload bytes it arrived as."""
    task = codec.decode(codec.encode(Task.new(task_type, payload)))
    assert isinstance(task.payload, DecodedRecord)
    return task.payload, task.payload._encoded


def test_an_unchanged_payload_is_written_as_the_bytes_it_came_in(codec: EnvelopeCodec) -> None:
    payload, original = received(codec, "resize", RESIZE)
    assert payload == RESIZE and isinstance(payload, dict)
    assert codec.encode_payload("crop", payload) is original
    child = codec.decode(codec.encode(Task.new("crop", payload)))
    assert child.payload == RESIZE and child.payload._encoded == original


def test_a_payload_changed_in_place_is_encoded_and_validated_again(
        codec: EnvelopeCodec, registry: SchemaRegistry) -> None:
    payload, original = received(codec, "resize", RESIZE)
    payload["width"] = 10
    changed = codec.encode_payload("crop", payload)
    assert changed != original and registry.decode(changed)[0] == {**RESIZE, "width": 10}
    payload["width"] = 1.5  # the writer alone would truncate it to 1; validation refuses
    with pytest.raises(PayloadSchemaError, match="width"):
        codec.encode_payload("crop", payload)
    del payload["width"]
    with pytest.raises(PayloadSchemaError, match="width"):
        codec.encode_payload("crop", payload)


def test_a_nested_value_changed_in_place_is_seen(codec: EnvelopeCodec,
                                                 registry: SchemaRegistry) -> None:
    album = {"title": "t", "photos": ["a", "b"]}
    payload, original = received(codec, "album", album)
    assert codec.encode_payload("album2", payload) is original
    payload["photos"].append("c")
    changed = codec.encode_payload("album2", payload)
    assert registry.decode(changed)[0] == {"title": "t", "photos": ["a", "b", "c"]}


def test_a_stage_declaring_another_schema_gets_it_encoded(codec: EnvelopeCodec) -> None:
    payload, original = received(codec, "resize", RESIZE)
    as_json = codec.encode_payload("undeclared", payload)
    assert as_json != original
    assert codec.decode(codec.encode(Task.new("undeclared", payload))).payload == RESIZE
    with pytest.raises(PayloadSchemaError, match=r"photos\.Album"):
        codec.encode_payload("album", payload)


def test_a_payload_resolved_from_another_version_is_a_plain_dict(
        registry: SchemaRegistry) -> None:
    newer = registry.register({**registry.get("photos.ResizeRequest").definition,
                               "fields": [*registry.get("photos.ResizeRequest")
                                          .definition["fields"],
                                          {"name": "quality", "type": "int", "default": 85}]})
    older = registry.by_fingerprint(default_registry().get("photos.ResizeRequest").fingerprint)
    assert older is not None
    written = EnvelopeCodec(registry, {"resize": older}).encode(Task.new("resize", RESIZE))
    payload = EnvelopeCodec(registry, {"resize": newer}).decode(written).payload
    assert type(payload) is dict and payload == {**RESIZE, "quality": 85}


@pytest.mark.parametrize("attempt", [-1, 2**31, 2**40])
def test_an_attempt_a_retry_header_cannot_carry_back_is_a_decode_error(
        codec: EnvelopeCodec, attempt: int) -> None:
    """An 8-byte ``retry_topic-attempts`` header reads as any 64-bit number; an attempt past
    32 bits could not be written on the task's next retry or dead letter (the fuzz found it
    crash routing), so the record is poison, dead-lettered with its reason."""
    data = codec.encode(Task.new("resize", {"photo_id": "p", "width": 1, "height": 1}))
    with pytest.raises(DecodeError, match="attempt"):
        codec.decode(data, attempt=attempt)
