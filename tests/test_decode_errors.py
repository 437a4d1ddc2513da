"""Bad input to the decoders raises DecodeError, always, and never any other exception.

A worker relies on this to route any undecodable record to its dead-letter queue.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtask.errors import DecodeError
from streamtask.model.envelope import EnvelopeCodec, Task
from streamtask.model.registry import HEADER_SIZE, Schema, SchemaRegistry, default_registry

REGISTRY = default_registry()
RESIZE = REGISTRY.get("photos.ResizeRequest")
ENVELOPE = REGISTRY.get("streamtask.Envelope")
JSON = REGISTRY.get("streamtask.JsonPayload")
CODEC = EnvelopeCodec(REGISTRY, {"resize": RESIZE})
TASK = Task.new("resize", {"photo_id": "p-1", "width": 640, "height": 480}, key="k",
                parent_id="p", headers={"trace": "x"}).with_(not_before=5, pipeline_version=2)
VALID = CODEC.encode(TASK)


def envelope_around(payload: bytes, task_type: str = "resize") -> bytes:
    """A well-formed envelope carrying arbitrary payload bytes."""
    record = {"task_id": "t", "task_type": task_type, "payload": payload, "created_at": 0}
    buf = io.BytesIO()
    buf.write(ENVELOPE.header)
    schemaless_writer(buf, parse_schema(ENVELOPE.definition), record)
    return buf.getvalue()


def test_the_valid_record_decodes() -> None:
    assert CODEC.decode(VALID) == TASK


@pytest.mark.parametrize("data", [b"", b"\x00", b"hello world, not avro", b"\xc3", b"\xc3\x01",
                                  b"\xff" * 64, b"{\"json\": true}"])
def test_garbage(data: bytes) -> None:
    with pytest.raises(DecodeError):
        CODEC.decode(data)
    with pytest.raises(DecodeError):
        REGISTRY.decode(data)


def test_every_truncation_of_a_valid_record() -> None:
    for length in range(len(VALID)):
        with pytest.raises(DecodeError):
            CODEC.decode(VALID[:length])
    payload = CODEC.encode_payload("resize", TASK.payload)
    for length in range(len(payload)):
        with pytest.raises(DecodeError):
            REGISTRY.decode(payload[:length], reader=RESIZE)


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        CODEC.decode(VALID + b"\x00")
    payload = CODEC.encode_payload("resize", TASK.payload)
    with pytest.raises(DecodeError, match="trailing"):
        CODEC.decode(envelope_around(payload + b"junk"))


def test_wrong_marker() -> None:
    for bad in (b"\x00\x01", b"\xc3\x00", b"\x01\xc3"):
        with pytest.raises(DecodeError, match="marker"):
            CODEC.decode(bad + VALID[2:])


def test_unknown_envelope_fingerprint_names_the_known_ones() -> None:
    data = VALID[:2] + bytes(8) + VALID[HEADER_SIZE:]
    with pytest.raises(DecodeError, match=r"unknown schema fingerprint 0x0{16}") as raised:
        CODEC.decode(data)
    message = str(raised.value)
    assert "register the writer's schema" in message
    assert f"streamtask.Envelope {ENVELOPE.fingerprint_hex}" in message


def test_unknown_payload_fingerprint() -> None:
    payload = CODEC.encode_payload("resize", TASK.payload)
    bad = payload[:2] + b"\x01" * 8 + payload[HEADER_SIZE:]
    with pytest.raises(DecodeError, match="payload: unknown schema fingerprint 0x0101"):
        CODEC.decode(envelope_around(bad))


def test_a_payload_record_is_not_an_envelope() -> None:
    with pytest.raises(DecodeError, match=r"expected a streamtask\.Envelope"):
        CODEC.decode(CODEC.encode_payload("resize", TASK.payload))


def test_payload_not_matching_the_reader_schema() -> None:
    registry = default_registry()
    stricter = registry.register({
        "type": "record", "name": "ResizeRequest", "namespace": "photos",
        "fields": [*RESIZE.definition["fields"], {"name": "dpi", "type": "int"}]})
    reader = EnvelopeCodec(registry, {"resize": stricter})
    with pytest.raises(DecodeError, match=r"as photos\.ResizeRequest") as raised:
        reader.decode(VALID)
    assert raised.value.__cause__ is not None
    json_task = EnvelopeCodec(registry).encode(Task.new("resize", {"photo_id": "p"}))
    with pytest.raises(DecodeError, match=r"streamtask\.JsonPayload"):
        reader.decode(json_task)


def test_json_payload_that_is_not_json() -> None:
    bad = REGISTRY.encode(JSON, {"json": "{not json"})
    with pytest.raises(DecodeError, match="not valid JSON"):
        CODEC.decode(envelope_around(bad, task_type="free"))


def test_invalid_utf8_in_a_string() -> None:
    good = CODEC.encode_payload("resize", {"photo_id": "ab", "width": 1, "height": 1})
    bad = good.replace(b"ab", b"\xff\xfe")
    with pytest.raises(DecodeError, match="UnicodeDecodeError"):
        REGISTRY.decode(bad)


def test_errors_chain_the_underlying_cause() -> None:
    with pytest.raises(DecodeError) as raised:
        CODEC.decode(VALID[:-3])
    assert raised.value.__cause__ is not None


# --- fuzzing ---------------------------------------------------------------------------------

def decode_or_decode_error(codec: EnvelopeCodec, data: bytes) -> Any:
    try:
        return codec.decode(data)
    except DecodeError:
        return None


@settings(deadline=None, max_examples=300)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    decode_or_decode_error(CODEC, data)


@settings(deadline=None, max_examples=300)
@given(body=st.binary(max_size=200), schema=st.sampled_from([ENVELOPE, RESIZE, JSON]))
def test_arbitrary_bodies_behind_a_known_header(body: bytes, schema: Schema) -> None:
    decode_or_decode_error(CODEC, schema.header + body)
    with contextlib.suppress(DecodeError):
        REGISTRY.decode(schema.header + body, reader=RESIZE)


@settings(deadline=None, max_examples=300)
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)),
                      min_size=1, max_size=4))
def test_corrupted_valid_records(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for position, value in edits:
        data[position] = value
    decoded = decode_or_decode_error(CODEC, bytes(data))
    assert decoded is None or isinstance(decoded, Task)


def test_a_fresh_registry_knows_nothing() -> None:
    with pytest.raises(DecodeError, match=r"known: none"):
        SchemaRegistry().decode(VALID)
