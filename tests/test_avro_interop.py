"""Interoperability with the Apache reference implementation (the ``avro`` package).

Bodies streamtask writes must decode with ``avro.io``; bodies ``avro.io`` writes, framed as
single-object encoding, must decode with streamtask. Fingerprints are checked against an
independent implementation of the specification's CRC-64-AVRO.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import avro.io
import avro.schema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtask.model.envelope import EnvelopeCodec, Task
from streamtask.model.registry import (
    BUNDLED_SCHEMAS_DIR,
    HEADER_SIZE,
    MARKER,
    Schema,
    default_registry,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INT32 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
RESIZE = st.fixed_dictionaries({"photo_id": TEXT, "width": INT32, "height": INT32})
BUNDLED = ("streamtask.Envelope", "streamtask.JsonPayload", "photos.ResizeRequest")

REGISTRY = default_registry()
ENVELOPE_V1 = REGISTRY.by_fingerprint(Schema.from_definition(
    (BUNDLED_SCHEMAS_DIR / "streamtask.Envelope.avsc").read_text(encoding="utf-8")).fingerprint)
CODEC = EnvelopeCodec(REGISTRY, {"resize": REGISTRY.get("photos.ResizeRequest")})


def crc64_avro(data: bytes) -> bytes:
    """The specification's 64-bit Rabin fingerprint, as the 8 little-endian bytes on the wire."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def without_logical_types(definition: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(definition).replace(', "logicalType": "timestamp-millis"', "")
    plain: dict[str, Any] = json.loads(text)
    return plain


def reference(schema: Schema, *, plain: bool = False) -> Any:
    definition = without_logical_types(schema.definition) if plain else schema.definition
    return avro.schema.parse(json.dumps(definition))


def reference_read(schema: Schema, data: bytes) -> Any:
    assert data[:HEADER_SIZE] == schema.header
    decoder = avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:]))
    return avro.io.DatumReader(reference(schema)).read(decoder)


def reference_write(schema: Schema, record: Any) -> bytes:
    buf = io.BytesIO()
    buf.write(MARKER + schema.fingerprint)
    avro.io.DatumWriter(reference(schema)).write(record, avro.io.BinaryEncoder(buf))
    return buf.getvalue()


# --- fingerprints ----------------------------------------------------------------------------

def bundled(name: str) -> Schema:
    """A bundled schema by name, ``streamtask.Envelope.v1`` for the envelope's version 1."""
    if name == "streamtask.Envelope.v1":
        assert ENVELOPE_V1 is not None
        return ENVELOPE_V1
    return REGISTRY.get(name)


@pytest.mark.parametrize("name", [*BUNDLED, "streamtask.Envelope.v1"])
def test_fingerprint_is_the_specs_crc64_little_endian(name: str) -> None:
    schema = bundled(name)
    canonical = reference(schema, plain=True).canonical_form.encode()
    assert schema.fingerprint == crc64_avro(canonical)
    assert schema.header == b"\xc3\x01" + schema.fingerprint


@pytest.mark.parametrize("name", [*BUNDLED, "streamtask.Envelope.v1"])
def test_fingerprint_matches_the_reference_package(name: str) -> None:
    # avro-python 1.12 keeps {"type": "long"} for a primitive with a logicalType in the
    # canonical form, where the spec (and Java, and fastavro) write "long"; compare on the
    # schema with logical types removed, which all implementations agree on.
    schema = bundled(name)
    assert schema.fingerprint == reference(schema, plain=True).fingerprint("CRC-64-AVRO")


# --- streamtask writes, reference reads ------------------------------------------------------

@settings(deadline=None)
@given(record=RESIZE)
def test_reference_reads_payload_bodies(record: dict[str, Any]) -> None:
    data = CODEC.encode_payload("resize", record)
    assert reference_read(REGISTRY.get("photos.ResizeRequest"), data) == record


def test_reference_reads_envelope_and_json_payload() -> None:
    task = Task.new("free", {"a": [1, "ü"]}, key="k", headers={"h": "v"}, parent_id="p")
    task = task.with_(not_before=task.created_at + 1500, pipeline_version=3)
    envelope = reference_read(REGISTRY.get("streamtask.Envelope"), CODEC.encode(task))
    assert envelope["created_at"] == EPOCH + timedelta(milliseconds=task.created_at)
    assert envelope["not_before"] == EPOCH + timedelta(milliseconds=task.not_before or 0)
    assert (envelope["task_id"], envelope["task_type"], envelope["key"]) == (task.id, "free", "k")
    assert (envelope["attempt"], envelope["run_id"], envelope["parent_id"]) == (1, task.id, "p")
    assert envelope["headers"] == {"h": "v"} and envelope["pipeline_version"] == 3
    payload = reference_read(REGISTRY.get("streamtask.JsonPayload"), envelope["payload"])
    assert json.loads(payload["json"]) == {"a": [1, "ü"]}


# --- reference writes, streamtask reads ------------------------------------------------------

@settings(deadline=None)
@given(record=RESIZE)
def test_streamtask_reads_reference_payloads(record: dict[str, Any]) -> None:
    schema = REGISTRY.get("photos.ResizeRequest")
    assert REGISTRY.decode(reference_write(schema, record)) == (record, schema)


@settings(deadline=None)
@given(record=RESIZE, created=st.integers(0, 2**42), headers=st.dictionaries(TEXT, TEXT),
       version=st.sampled_from(["streamtask.Envelope", "streamtask.Envelope.v1"]))
def test_streamtask_reads_reference_envelopes(record: dict[str, Any], created: int,
                                              headers: dict[str, str], version: str) -> None:
    payload = reference_write(REGISTRY.get("photos.ResizeRequest"), record)
    absent: dict[str, Any] = {"key": None, "not_before": None, "parent_id": None,
                              "pipeline_version": None}
    if version == "streamtask.Envelope":  # version 2 writes "" and 0 for absent
        absent = {"key": "", "not_before": EPOCH, "parent_id": "", "pipeline_version": 0}
    envelope = {
        "task_id": "t1", "task_type": "resize", "payload": payload, "attempt": 2,
        "created_at": EPOCH + timedelta(milliseconds=created), "run_id": "r1",
        "headers": headers, **absent,
    }
    task = CODEC.decode(reference_write(bundled(version), envelope))
    assert task == Task("t1", "resize", record, attempt=2, created_at=created, run_id="r1",
                        headers=headers)
