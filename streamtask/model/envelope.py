"""Tasks and their wire format: an Avro envelope around a separately encoded payload.

A record on a task topic is the ``streamtask.Envelope`` schema in single-object encoding.
Its ``payload`` field holds the payload, itself single-object encoded with the schema its
task type declares, or with ``streamtask.JsonPayload`` (orjson text) when it declares none.
Both layers carry their writer's fingerprint, so envelope and payload schemas evolve
independently: a reader resolves whatever version was written into the version it knows.

Timestamps stay epoch-millisecond ints end to end. The envelope declares them as
``timestamp-millis`` for other readers, but the codec reads and writes the envelope through a
copy of its schema with logical types removed: the bytes and the fingerprint are identical
(logical types are not part of the canonical form), while fastavro's conversion to and from
``datetime`` would cost about a third of the envelope's decode time. Mutating fastavro's
global ``LOGICAL_READERS`` table would achieve the same but would change every other fastavro
user in the process.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from random import getrandbits
from typing import Any

import orjson
from fastavro import parse_schema, schemaless_writer

from streamtask import clock
from streamtask.errors import ConfigurationError, DecodeError, PayloadSchemaError
from streamtask.model.registry import (
    BUNDLED_SCHEMAS_DIR,
    HEADER_SIZE,
    MARKER,
    Schema,
    SchemaRegistry,
    decode_body,
    interned,
)

__all__ = [
    "ENVELOPE_SCHEMA", "ENVELOPE_V2", "JSON_PAYLOAD_SCHEMA", "DecodedRecord", "EnvelopeCodec",
    "Task",
]

ENVELOPE_SCHEMA = "streamtask.Envelope"
#: The file (in :data:`~streamtask.model.registry.BUNDLED_SCHEMAS_DIR`) of the envelope
#: version the codec writes; ``streamtask.Envelope.avsc`` holds version 1, still read.
ENVELOPE_V2 = "streamtask.Envelope.v2"
JSON_PAYLOAD_SCHEMA = "streamtask.JsonPayload"


def new_task_id(now_ms: int | None = None) -> str:
    """32 hex digits: the creation time in milliseconds (12 digits, as in UUIDv7), then 80
    random bits. A run's id is its first task's, so a run's start time can be read from its
    id, and its execution trail found by time (:mod:`streamtask.ops.trail`).

    Ids must be unique, not secret, so they come from the ``random`` module (seeded from the
    OS per process and reseeded in forked children) rather than ``os.urandom``: a system call
    per task that also releases the interpreter lock, which cost the worker loop a thread
    switch per task (measured).
    """
    return f"{clock.now_ms() if now_ms is None else now_ms:012x}{getrandbits(80):020x}"


_FIELDS = ("id", "type", "payload", "key", "attempt", "created_at", "not_before", "run_id",
           "parent_id", "headers", "pipeline_version")


class _TaskFields:
    """The storage of a :class:`Task`: its slots, and nothing that runs."""

    __slots__ = _FIELDS

    id: str
    type: str
    payload: Any
    key: str | None
    attempt: int
    created_at: int
    not_before: int | None
    run_id: str
    parent_id: str | None
    headers: Mapping[str, str]
    pipeline_version: int | None


class _Building(_TaskFields):
    """A task being filled in: the same layout as Task, but assignable."""

    __slots__ = ()


class Task(_TaskFields):
    """One unit of work: which stage runs it (``type``), on what (``payload``), and its history.

    Times are epoch milliseconds. ``attempt`` is 1 on the first execution and grows with each
    retry; ``run_id`` ties every task descended from one original send together (it defaults
    to the task's own id). A task is immutable: change one with :meth:`with_`. Treat
    ``headers`` and ``payload`` as read-only too: tasks are shared between the worker,
    handlers and retry logic.

    Not a frozen dataclass: its ``__init__`` sets each of the 11 fields through
    ``object.__setattr__``, and the worker builds two tasks per task it runs. A task is
    built as a plain assignable object of the same layout, then becomes a ``Task``, whose
    ``__setattr__`` refuses: about a third of the frozen dataclass's cost
    (``benchmarks/codec_bench.py``).
    """

    __slots__ = ()
    __match_args__ = ("id", "type", "payload")

    def __new__(cls, id: str, type: str, payload: Any, *, key: str | None = None,
                attempt: int = 1, created_at: int | None = None,
                not_before: int | None = None, run_id: str = "",
                parent_id: str | None = None, headers: Mapping[str, str] | None = None,
                pipeline_version: int | None = None) -> Task:
        """``created_at`` defaults to now, ``run_id`` to ``id``, ``headers`` to none.

        An empty ``key`` or ``parent_id`` and a ``not_before`` of 0 are taken as None, as
        envelope version 2 writes them.
        """
        return _build(cls, id, type, payload, key, attempt,
                      clock.now_ms() if created_at is None else created_at, not_before, run_id,
                      parent_id, {} if headers is None else headers, pipeline_version)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Task is immutable, use task.with_({name}=...) for a changed copy")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a Task is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return _task_of, self._values()

    @classmethod
    def new(cls, type: str, payload: Any, *, key: str | None = None, id: str | None = None,
            run_id: str | None = None, parent_id: str | None = None,
            headers: Mapping[str, str] | None = None,
            pipeline_version: int | None = None) -> Task:
        """A first-attempt task created now, with a fresh random id unless one is given.

        ``headers`` is copied, so later changes to the caller's mapping do not leak in.
        """
        return cls(id or new_task_id(), type, payload, key=key, run_id=run_id or "",
                   parent_id=parent_id, headers=dict(headers) if headers else {},
                   pipeline_version=pipeline_version)

    def with_(self, **changes: Any) -> Task:
        """A copy with some fields changed, e.g. ``task.with_(attempt=task.attempt + 1)``."""
        fields = self.as_dict()
        fields.update(changes)
        return Task(**fields)

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (e.g. for JSON output); the values themselves are not copied."""
        return dict(zip(_FIELDS, self._values(), strict=True))

    def _values(self) -> tuple[Any, ...]:
        return (self.id, self.type, self.payload, self.key, self.attempt, self.created_at,
                self.not_before, self.run_id, self.parent_id, self.headers,
                self.pipeline_version)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Task) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # equal tasks may hold unhashable payloads

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(_FIELDS, self._values(),
                                                                     strict=True))
        return f"Task({shown})"


_new_object = object.__new__


def _build(cls: type[Task], id: str, type: str, payload: Any, key: str | None, attempt: int,
           created_at: int, not_before: int | None, run_id: str, parent_id: str | None,
           headers: Mapping[str, str], pipeline_version: int | None) -> Task:
    """A task of class ``cls`` from its field values, normalised as ``Task()`` documents.
    Positional, so the worker's per-task paths (decode, a chain's child) pay no keyword
    handling."""
    task = _new_object(_Building)
    task.id = id
    task.type = type
    task.payload = payload
    task.key = key or None
    task.attempt = attempt
    task.created_at = created_at
    task.not_before = not_before or None
    task.run_id = run_id or id
    task.parent_id = parent_id or None
    task.headers = headers
    task.pipeline_version = pipeline_version
    task.__class__ = cls  # type: ignore[assignment]
    return task  # type: ignore[return-value]


def child_task(type: str, payload: Any, parent: Task, headers: Mapping[str, str]) -> Task:
    """The next task of ``parent``'s run for stage ``type``, as ``Task.new`` makes it with
    the parent's key, run id, id as parent id and pipeline version (``headers`` copied):
    one clock read for its id and creation time, no keyword handling."""
    now = clock.now_ms()
    return _build(Task, new_task_id(now), type, payload, parent.key, 1, now, None,
                  parent.run_id, parent.id, dict(headers) if headers else {},
                  parent.pipeline_version)


def _task_of(*values: Any) -> Task:
    """The task with these field values in field order (how a pickled task is rebuilt)."""
    return Task(**dict(zip(_FIELDS, values, strict=True)))


class DecodedRecord(dict[str, Any]):
    """A payload record as the codec decoded it, remembering the bytes it came from.

    It is a ``dict`` in every way a handler can tell. A stage that passes its payload on
    unchanged (``return task.payload``) to a stage declaring the same schema would otherwise
    have it validated and written again: about 15 % of the worker's interpreter time on a
    no-op stage (``benchmarks/results.md``). The codec writes the original bytes instead, but
    only after checking that the record still equals what was decoded: a handler that
    changes it in place gets it validated and encoded as before. The check is ``==``: a
    value replaced by an equal one of another type (``1`` by ``1.0`` or ``True``, ``0.0`` by
    ``-0.0``) passes on as the value decoded. The bytes are held as long as the record is:
    about the payload's size again per task in flight.
    """

    __slots__ = ("_encoded", "_fingerprint", "_snapshot")

    _encoded: bytes
    _fingerprint: bytes
    _snapshot: dict[str, Any] | None
    """For a schema without nested records, arrays or maps, the record as decoded, in a dict
    of its own (its values are immutable, so this is exact); None: decode the bytes again
    to compare."""

    def _unchanged_as(self, schema: Schema) -> bool:
        """Whether the original bytes are what encoding this record with ``schema`` gives."""
        if self._fingerprint != schema.fingerprint:
            return False
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = decode_body(self._encoded, schema.parsed, None, schema.name)
        return self == snapshot


_FLAT_TYPES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes",
                         "string", "enum", "fixed"))


def _is_flat(avro_type: Any) -> bool:
    """Whether values of this (parsed) Avro type decode to immutable Python objects."""
    if isinstance(avro_type, list):
        return all(_is_flat(branch) for branch in avro_type)
    if isinstance(avro_type, dict):
        return avro_type.get("type") in _FLAT_TYPES
    return avro_type in _FLAT_TYPES


def _flat_record(schema: Schema) -> bool:
    parsed = schema.parsed
    return isinstance(parsed, dict) and parsed.get("type") == "record" and all(
        _is_flat(f["type"]) for f in parsed["fields"])


@cache
def _bundled(file_stem: str) -> Schema:
    """A schema shipped with streamtask, parsed once per process."""
    path = BUNDLED_SCHEMAS_DIR / f"{file_stem}.avsc"
    return Schema.from_definition(path.read_text(encoding="utf-8"))


def _without_logical_types(schema: Any) -> Any:
    """The same Avro type with every ``logicalType`` annotation removed (same wire format)."""
    if isinstance(schema, list):
        return [_without_logical_types(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    plain = {k: v for k, v in schema.items() if k != "logicalType"}
    kind = plain.get("type")
    if kind in ("record", "error"):
        plain["fields"] = [{**f, "type": _without_logical_types(f["type"])}
                           for f in plain["fields"]]
    elif kind == "array":
        plain["items"] = _without_logical_types(plain["items"])
    elif kind == "map":
        plain["values"] = _without_logical_types(plain["values"])
    elif isinstance(kind, dict | list):
        plain["type"] = _without_logical_types(kind)
    return plain


def _plain_parse(schema: Schema) -> Any:
    return interned(parse_schema(_without_logical_types(schema.definition)))


def _registered(registry: SchemaRegistry, schema: Schema, what: str) -> Schema:
    held = registry.by_fingerprint(schema.fingerprint)
    if held is None:
        raise ConfigurationError(
            f"{what} {schema.name} ({schema.fingerprint_hex}) is not in the schema registry; "
            "build the registry with streamtask.model.registry.default_registry() and "
            "register payload schemas before creating the codec")
    return held


class EnvelopeCodec:
    """Encodes tasks to envelope bytes and back, knowing each task type's payload schema.

    Task types missing from ``payload_schemas`` carry JSON payloads. Every schema is parsed
    when the codec is built; encoding and decoding then do no schema work unless a record
    was written with a different schema version than this process's. The codec is safe to
    share between threads.

    It writes envelope version 2 (:data:`ENVELOPE_V2`, no nullable fields) and reads every
    registered version: version 1 as written, any other through version 1's shape, whose
    nullable fields accept both (version 2's fields resolve into them; the reverse fails on
    every null). Payload records come back as :class:`DecodedRecord`.
    """

    __slots__ = ("_envelope", "_flat", "_json", "_lenient", "_payload_schemas",
                 "_plain_envelope", "_readers", "_registry", "_validate")

    def __init__(self, registry: SchemaRegistry,
                 payload_schemas: Mapping[str, Schema] | None = None, *,
                 validate: bool = True) -> None:
        """Build a codec; ``validate=False`` skips the full payload check on encode.

        Without it, fastavro's writer still rejects missing, extra and wrongly typed fields,
        but silently truncates a float or bool given for an ``int`` and writes an
        out-of-range int; skip validation only for payloads built by trusted code.
        """
        self._registry = registry
        self._envelope = _registered(registry, _bundled(ENVELOPE_V2), "the envelope schema")
        self._json = _registered(registry, _bundled(JSON_PAYLOAD_SCHEMA), "the JSON schema")
        self._payload_schemas = {
            task_type: _registered(registry, schema, f"payload schema of {task_type!r}")
            for task_type, schema in (payload_schemas or {}).items()}
        self._flat = {schema.fingerprint: _flat_record(schema)
                      for schema in self._payload_schemas.values()}
        self._plain_envelope = _plain_parse(self._envelope)
        v1 = _bundled(ENVELOPE_SCHEMA)
        self._lenient = _plain_parse(v1)
        # writer fingerprint -> (plain writer schema, plain reader schema or None)
        self._readers: dict[bytes, tuple[Any, Any]] = {
            self._envelope.fingerprint: (self._plain_envelope, None),
            v1.fingerprint: (self._lenient, None)}
        self._validate = validate

    def payload_schema(self, task_type: str) -> Schema:
        """The schema payloads of ``task_type`` are written with (JsonPayload if undeclared)."""
        return self._payload_schemas.get(task_type, self._json)

    def encode_payload(self, task_type: str, payload: Any) -> bytes:
        """The payload as single-object bytes; raises PayloadSchemaError if it does not fit.

        A :class:`DecodedRecord` still equal to what was decoded, for the same schema, is
        written as the bytes it was decoded from: no validation, no encoding.
        """
        schema = self._payload_schemas.get(task_type)
        if schema is not None:
            if type(payload) is DecodedRecord and payload._unchanged_as(schema):
                return payload._encoded
            return self._registry.encode(schema, payload, validate=self._validate)
        try:
            text = orjson.dumps(payload).decode()
        except orjson.JSONEncodeError as exc:
            raise PayloadSchemaError(
                f"task type {task_type!r} declares no payload schema, so its payload must be "
                f"JSON-serialisable: {exc}") from exc
        return self._registry.encode(self._json, {"json": text}, validate=False)

    def encode(self, task: Task) -> bytes:
        """The task as envelope bytes; raises PayloadSchemaError if a field does not fit."""
        version = task.pipeline_version
        if version == 0:
            raise PayloadSchemaError(
                f"task {task.id!r}: pipeline version 0 cannot be told apart from no version "
                "on the wire; number pipeline versions from 1")
        record = {
            "task_id": task.id, "task_type": task.type,
            "payload": self.encode_payload(task.type, task.payload),
            "key": task.key or "", "attempt": task.attempt, "created_at": task.created_at,
            "not_before": task.not_before or 0, "run_id": task.run_id,
            "parent_id": task.parent_id or "", "headers": task.headers,
            "pipeline_version": version or 0,
        }
        buf = io.BytesIO()
        buf.write(self._envelope.header)
        try:
            schemaless_writer(buf, self._plain_envelope, record)
        except Exception as exc:
            raise PayloadSchemaError(
                f"task {task.id!r} cannot be encoded, a field has the wrong type: "
                f"{type(exc).__name__}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | memoryview, *, attempt: int | None = None,
               not_before: int | None = None) -> Task:
        """The task in ``data``; any bad input raises DecodeError, and nothing else does.

        ``attempt`` and ``not_before``, when given, replace the envelope's: a retry record is
        the task's record unchanged, its attempt and due time travel in retry headers
        (see :func:`streamtask.worker.outcomes.retry_record`). The empty strings and zeros that
        envelope version 2 writes for absent fields come back as None.
        """
        fp = bytes(data[2:HEADER_SIZE])
        entry = self._readers.get(fp) if data[:2] == MARKER else None
        if entry is None:
            entry = self._envelope_reader(data)
        env = decode_body(data, entry[0], entry[1], ENVELOPE_SCHEMA)
        attempt = attempt or env["attempt"]
        # A corrupt record or retry header: no task runs attempt 0 or less, and an attempt
        # past 32 bits (an 8-byte header) could not be written back on its retry or dead letter.
        if not 1 <= attempt < 2**31:
            raise DecodeError(f"task {env['task_id']!r}: attempt {attempt} is not between 1 "
                              f"and 2^31-1")
        return _build(Task, env["task_id"], env["task_type"], self._decode_payload(env),
                      env["key"], attempt, env["created_at"], not_before or env["not_before"],
                      env["run_id"], env["parent_id"], env["headers"],
                      env["pipeline_version"] or None)

    def _declared_payload(self, env: dict[str, Any], data: bytes, schema: Schema) -> Any:
        """A payload written with its task type's declared ``schema``, as a
        :class:`DecodedRecord` remembering ``data`` (so it can pass on unchanged)."""
        try:
            record = decode_body(data, schema.parsed, None, schema.name)
        except DecodeError as exc:
            raise DecodeError(f"task {env['task_id']!r} ({env['task_type']}): payload: "
                              f"{exc}") from exc
        if type(record) is not dict:
            return record
        decoded = DecodedRecord(record)
        decoded._encoded, decoded._fingerprint = data, schema.fingerprint
        decoded._snapshot = record if self._flat[schema.fingerprint] else None
        return decoded

    def _envelope_reader(self, data: bytes | memoryview) -> tuple[Any, Any]:
        """Plain schemas to read an envelope written with another envelope version."""
        writer = self._registry.writer_of(data)
        if writer.name != ENVELOPE_SCHEMA:
            raise DecodeError(f"expected a {ENVELOPE_SCHEMA} record, got a {writer.name} "
                              f"record ({writer.fingerprint_hex})")
        entry = (_plain_parse(writer), self._lenient)
        self._readers[writer.fingerprint] = entry
        return entry

    def _decode_payload(self, env: dict[str, Any]) -> Any:
        task_type = env["task_type"]
        reader = self._payload_schemas.get(task_type)
        data = env["payload"]
        if reader is not None and data[2:HEADER_SIZE] == reader.fingerprint \
                and data[:2] == MARKER:
            # Written with the declared schema (the common case): no registry look-up.
            return self._declared_payload(env, data, reader)
        try:
            record, writer = self._registry.decode(data, reader)
        except DecodeError as exc:
            raise DecodeError(f"task {env['task_id']!r} ({task_type}): payload: {exc}") from exc
        if reader is not None:
            return record  # resolved from another version: no bytes to pass on
        if writer.fingerprint != self._json.fingerprint:
            return record
        try:
            return orjson.loads(record["json"])
        except orjson.JSONDecodeError as exc:
            raise DecodeError(
                f"task {env['task_id']!r} ({task_type}): JSON payload is not valid JSON: {exc}"
            ) from exc
