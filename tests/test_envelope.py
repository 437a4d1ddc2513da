"""Tasks, the schema registry and the envelope codec: round trips and send-time validation."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtask.errors import ConfigurationError, PayloadSchemaError
from streamtask.model.envelope import EnvelopeCodec, Task
from streamtask.model.registry import MARKER, Schema, SchemaRegistry, default_registry

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | INT64 | TEXT
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
RESIZE = st.fixed_dictionaries({"photo_id": TEXT, "width": INT32, "height": INT32})


def tasks(task_type: st.SearchStrategy[str], payload: st.SearchStrategy[Any]) -> Any:
    return st.builds(
        Task, id=TEXT, type=task_type, payload=payload,
        key=st.none() | TEXT, attempt=st.integers(1, 2**31 - 1), created_at=INT64,
        not_before=st.none() | INT64, run_id=TEXT, parent_id=st.none() | TEXT,
        headers=st.dictionaries(TEXT, TEXT, max_size=5),
        pipeline_version=st.none() | INT32.filter(lambda version: version != 0))


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return default_registry()


@pytest.fixture(scope="module")
def codec(registry: SchemaRegistry) -> EnvelopeCodec:
    return EnvelopeCodec(registry, {"resize": registry.get("photos.ResizeRequest")})


# --- Task ------------------------------------------------------------------------------------

def test_new_fills_id_time_and_first_attempt() -> None:
    before = time.time_ns() // 1_000_000
    task = Task.new("resize", {"photo_id": "p", "width": 1, "height": 2})
    assert len(task.id) == 32 and int(task.id, 16) >= 0
    assert task.run_id == task.id and task.attempt == 1
    assert before <= task.created_at <= time.time_ns() // 1_000_000
    assert task.key is None and task.parent_id is None and task.not_before is None
    assert dict(task.headers) == {} and task.pipeline_version is None
    assert Task.new("x", None).id != Task.new("x", None).id


def test_new_keeps_given_ids_and_copies_headers() -> None:
    headers = {"trace": "1"}
    task = Task.new("resize", None, key="k", id="t1", run_id="r1", parent_id="p1",
                    headers=headers)
    headers["trace"] = "changed"
    assert (task.id, task.run_id, task.parent_id, task.key) == ("t1", "r1", "p1", "k")
    assert task.headers == {"trace": "1"}


def test_with_changes_fields_and_keeps_the_rest() -> None:
    task = Task.new("resize", None, id="t1")
    retry = task.with_(attempt=2, not_before=123)
    assert (retry.attempt, retry.not_before, retry.id, retry.run_id) == (2, 123, "t1", "t1")
    assert task.attempt == 1


def test_task_is_frozen() -> None:
    task = Task.new("resize", None)
    with pytest.raises(AttributeError):
        task.attempt = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del task.key  # type: ignore[misc]
    assert task.attempt == 1


def test_task_equality_hash_repr_and_pickle() -> None:
    task = Task("t1", "resize", (1, 2), key="k", created_at=5, headers={"h": "v"})
    same = Task("t1", "resize", (1, 2), key="k", created_at=5, headers={"h": "v"})
    assert task == same and task != same.with_(attempt=2) and task != "t1"
    with pytest.raises(TypeError, match="unhashable"):
        hash(task)
    assert repr(task) == ("Task(id='t1', type='resize', payload=(1, 2), key='k', attempt=1, "
                          "created_at=5, not_before=None, run_id='t1', parent_id=None, "
                          "headers={'h': 'v'}, pipeline_version=None)")
    assert pickle.loads(pickle.dumps(task)) == task
    assert task.as_dict()["run_id"] == "t1" and Task(**task.as_dict()) == task


def test_empty_key_and_parent_and_zero_due_time_mean_none() -> None:
    task = Task("t1", "x", None, key="", parent_id="", not_before=0)
    assert (task.key, task.parent_id, task.not_before) == (None, None, None)


# --- round trips -----------------------------------------------------------------------------

@settings(deadline=None)
@given(task=tasks(TEXT.filter(lambda t: t != "resize"), JSON_VALUES))
def test_json_payload_tasks_round_trip(codec: EnvelopeCodec, task: Task) -> None:
    assert codec.decode(codec.encode(task)) == task


@settings(deadline=None)
@given(task=tasks(st.just("resize"), RESIZE))
def test_declared_payload_tasks_round_trip(codec: EnvelopeCodec, registry: SchemaRegistry,
                                           task: Task) -> None:
    data = codec.encode(task)
    assert data[:10] == registry.get("streamtask.Envelope").header
    assert codec.decode(data) == task
    assert codec.decode(memoryview(data)) == task


def test_timestamps_come_back_as_epoch_millisecond_ints(codec: EnvelopeCodec) -> None:
    task = Task("t", "other", [1], created_at=1_700_000_000_123, not_before=1_700_000_060_000)
    decoded = codec.decode(codec.encode(task))
    assert type(decoded.created_at) is int and decoded.created_at == 1_700_000_000_123
    assert type(decoded.not_before) is int and decoded.not_before == 1_700_000_060_000


def test_payload_schema_and_encode_payload(codec: EnvelopeCodec,
                                           registry: SchemaRegistry) -> None:
    resize = registry.get("photos.ResizeRequest")
    assert codec.payload_schema("resize") is resize
    assert codec.payload_schema("anything").name == "streamtask.JsonPayload"
    body = codec.encode_payload("resize", {"photo_id": "p", "width": 3, "height": 4})
    assert body.startswith(resize.header)
    record, writer = registry.decode(body)
    assert writer is resize and record == {"photo_id": "p", "width": 3, "height": 4}
    json_body = codec.encode_payload("anything", {"a": [1, 2]})
    record, writer = registry.decode(json_body)
    assert writer.name == "streamtask.JsonPayload" and json.loads(record["json"]) == {"a": [1, 2]}


# --- send-time validation --------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "field"), [
    ({"photo_id": "p", "width": 1}, "height"),
    ({"photo_id": "p", "width": "wide", "height": 2}, "width"),
    ({"photo_id": 7, "width": 1, "height": 2}, "photo_id"),
    ({"photo_id": "p", "width": 1.5, "height": 2}, "width"),
    ({"photo_id": "p", "width": True, "height": 2}, "width"),
    ({"photo_id": "p", "width": 2**40, "height": 2}, "width"),
    ({"photo_id": "p", "width": 1, "height": 2, "depth": 3}, "depth"),
])
def test_payload_not_matching_its_schema_names_the_field(
        codec: EnvelopeCodec, payload: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadSchemaError, match=field) as raised:
        codec.encode(Task.new("resize", payload))
    assert "photos.ResizeRequest" in str(raised.value)
    with pytest.raises(PayloadSchemaError, match=field):
        codec.encode_payload("resize", payload)


def test_payload_that_is_not_a_record_is_rejected(codec: EnvelopeCodec) -> None:
    for payload in (None, "text", [1, 2]):
        with pytest.raises(PayloadSchemaError, match=r"photos\.ResizeRequest"):
            codec.encode_payload("resize", payload)


def test_without_validation_the_writer_still_rejects_missing_and_extra_fields(
        registry: SchemaRegistry) -> None:
    fast = EnvelopeCodec(registry, {"resize": registry.get("photos.ResizeRequest")},
                         validate=False)
    with pytest.raises(PayloadSchemaError, match="height"):
        fast.encode_payload("resize", {"photo_id": "p", "width": 1})
    with pytest.raises(PayloadSchemaError, match="depth"):
        fast.encode_payload("resize", {"photo_id": "p", "width": 1, "height": 2, "depth": 3})
    with pytest.raises(PayloadSchemaError, match="width"):
        fast.encode_payload("resize", {"photo_id": "p", "width": "x", "height": 2})


@pytest.mark.parametrize("payload", [object(), b"bytes", {1: "non-str key"}, 2**70])
def test_json_payload_that_orjson_cannot_serialise_is_rejected(
        codec: EnvelopeCodec, payload: Any) -> None:
    with pytest.raises(PayloadSchemaError, match="JSON"):
        codec.encode(Task.new("free-form", payload))


def test_envelope_field_of_the_wrong_type_is_rejected(codec: EnvelopeCodec) -> None:
    task = Task("t", "other", 1, attempt="2")  # type: ignore[arg-type]
    with pytest.raises(PayloadSchemaError, match="'t'"):
        codec.encode(task)


# --- registry --------------------------------------------------------------------------------

RESIZE_V2 = {
    "type": "record", "name": "ResizeRequest", "namespace": "photos",
    "fields": [{"name": "photo_id", "type": "string"}, {"name": "width", "type": "int"},
               {"name": "height", "type": "int"},
               {"name": "quality", "type": "int", "default": 85}],
}


def test_default_registry_is_new_each_time_and_holds_the_bundled_schemas() -> None:
    first, second = default_registry(), default_registry()
    assert first is not second
    for name in ("streamtask.Envelope", "streamtask.JsonPayload", "photos.ResizeRequest"):
        schema = first.get(name)
        assert schema.name == name and len(schema.fingerprint) == 8
        assert schema.header == MARKER + schema.fingerprint
    first.register(RESIZE_V2)
    assert second.get("photos.ResizeRequest").definition != RESIZE_V2


def test_register_is_idempotent_and_accepts_json_text() -> None:
    registry = SchemaRegistry()
    schema = registry.register(RESIZE_V2)
    assert registry.register(RESIZE_V2) is schema
    assert registry.register(json.dumps(RESIZE_V2)) is schema
    assert len(registry) == 1


def test_latest_version_wins_by_name_and_all_stay_findable_by_fingerprint() -> None:
    registry = default_registry()
    v1 = registry.get("photos.ResizeRequest")
    v2 = registry.register(RESIZE_V2)
    assert v1.fingerprint != v2.fingerprint
    assert registry.get("photos.ResizeRequest") is v2
    assert registry.by_fingerprint(v1.fingerprint) is v1
    assert registry.by_fingerprint(v2.fingerprint) is v2
    assert registry.by_fingerprint(b"\x00" * 8) is None


def test_register_does_not_alias_the_callers_dict() -> None:
    definition = json.loads(json.dumps(RESIZE_V2))
    schema = SchemaRegistry().register(definition)
    definition["fields"].clear()
    assert len(schema.definition["fields"]) == 4


@pytest.mark.parametrize("definition", [
    "{not json", '"string"', {"type": "array", "items": "int"},
    {"type": "record", "fields": []},
    {"type": "record", "name": "x.Bad", "fields": [{"name": "a", "type": "nosuchtype"}]},
])
def test_invalid_definitions_raise_configuration_error(definition: Any) -> None:
    with pytest.raises(ConfigurationError):
        SchemaRegistry().register(definition)


def test_get_unknown_name_lists_known_schemas_and_suggests() -> None:
    with pytest.raises(ConfigurationError) as raised:
        default_registry().get("photos.ResizeRequst")
    message = str(raised.value)
    assert "photos.ResizeRequst" in message and "did you mean 'photos.ResizeRequest'" in message
    assert "streamtask.Envelope" in message


def test_load_dir_registers_every_avsc_and_reports_bad_files(tmp_path: Any) -> None:
    (tmp_path / "a.avsc").write_text(json.dumps(RESIZE_V2))
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = SchemaRegistry().load_dir(tmp_path)
    assert [s.name for s in loaded] == ["photos.ResizeRequest"]
    (tmp_path / "b.avsc").write_text("{broken")
    with pytest.raises(ConfigurationError, match=r"b\.avsc"):
        SchemaRegistry().load_dir(tmp_path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        SchemaRegistry().load_dir(tmp_path / "missing")


def test_encoding_with_an_unregistered_schema_is_refused() -> None:
    schema = Schema.from_definition(RESIZE_V2)
    with pytest.raises(ConfigurationError, match="not registered"):
        default_registry().encode(schema, {"photo_id": "p", "width": 1, "height": 2})


def test_codec_requires_its_schemas_in_the_registry() -> None:
    with pytest.raises(ConfigurationError, match="default_registry"):
        EnvelopeCodec(SchemaRegistry())
    with pytest.raises(ConfigurationError, match="'resize'"):
        EnvelopeCodec(default_registry(), {"resize": Schema.from_definition(RESIZE_V2)})


def test_codec_keeps_writing_its_own_envelope_when_a_newer_one_is_registered() -> None:
    registry = default_registry()
    current = registry.get("streamtask.Envelope")
    newer = json.loads(json.dumps(current.definition))
    newer["fields"].append({"name": "priority", "type": "int", "default": 0})
    registry.register(newer)
    codec = EnvelopeCodec(registry)
    assert codec.encode(Task.new("x", 1))[:10] == current.header
