"""Avro schemas known to this process, and Avro single-object encoding with them.

Every record streamtask writes starts with a 10-byte header: the marker ``C3 01`` and the
8-byte CRC-64-AVRO fingerprint of the writer's Parsing Canonical Form, little-endian, as the
Avro specification's single-object encoding prescribes. A reader finds the writer's schema by
that fingerprint, so each version of a schema stays readable for as long as it is
registered, while lookups by name return the newest version.

The fingerprint covers only what changes the bytes on the wire: ``doc``, ``default``,
``aliases`` and ``logicalType`` do not take part in it (they are stripped from the canonical
form), so two definitions that differ only there share one fingerprint.

Registries are plain objects with no global state: build one per application, normally with
:func:`default_registry`. Registration is meant for start-up; once a registry is shared
between threads, treat it as read-only.
"""

from __future__ import annotations

import copy
import difflib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro import validation as avro_validation
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError

from streamtask.errors import ConfigurationError, DecodeError, PayloadSchemaError

__all__ = [
    "BUNDLED_SCHEMAS_DIR",
    "HEADER_SIZE",
    "MARKER",
    "Schema",
    "SchemaRegistry",
    "decode_body",
    "default_registry",
]

#: The two bytes that open every Avro single-object encoded record.
MARKER = b"\xc3\x01"
#: Marker plus the 8-byte fingerprint: where the Avro body starts.
HEADER_SIZE = 10
#: The schemas shipped with streamtask (envelope, generic JSON payload, examples).
BUNDLED_SCHEMAS_DIR = Path(__file__).parent.parent / "schemas"

_NAMED_TYPES = ("record", "enum", "fixed", "error")
_MAX_LISTED = 20
_MAX_DETAIL = 300


@dataclass(frozen=True, slots=True)
class Schema:
    """One parsed, fingerprinted version of a named Avro schema.

    Build it with :meth:`from_definition` (or :meth:`SchemaRegistry.register`), which parses
    the definition once; ``parsed`` is then reused for every record. Equal schemas have equal
    definitions; the hash covers name and fingerprint only, so instances can key a dict.
    """

    name: str
    definition: dict[str, Any] = field(hash=False)
    parsed: Any = field(compare=False, hash=False, repr=False)
    fingerprint: bytes
    header: bytes = field(repr=False)

    @classmethod
    def from_definition(cls, definition: dict[str, Any] | str) -> Schema:
        """Parse a named schema (a dict or JSON text) and compute its fingerprint.

        Raises :class:`ConfigurationError` when the text is not JSON, the schema is not a
        named record, enum or fixed, or fastavro rejects it. The schema must be
        self-contained: it may not refer to named types defined in other schemas.
        """
        raw = _load_definition(definition)
        try:
            parsed = parse_schema(raw)
            canonical = to_parsing_canonical_form(raw)
        except Exception as exc:
            name = raw.get("name", "<unnamed>")
            raise ConfigurationError(f"schema {name!r} is not valid Avro: {exc}") from exc
        # fastavro returns the 64-bit CRC as hex of its little-endian bytes, which is
        # exactly the byte order that single-object encoding puts on the wire.
        fp = bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO"))
        full_name = cast(dict[str, Any], parsed)["name"]
        return cls(name=full_name, definition=raw, parsed=interned(parsed), fingerprint=fp,
                   header=MARKER + fp)

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as ``0x`` + hex of its wire bytes, as error messages show it."""
        return "0x" + self.fingerprint.hex()


def _load_definition(definition: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(definition, str):
        try:
            loaded = json.loads(definition)
        except ValueError as exc:
            raise ConfigurationError(f"schema text is not valid JSON: {exc}") from exc
    else:
        loaded = copy.deepcopy(definition)
    if not isinstance(loaded, dict) or loaded.get("type") not in _NAMED_TYPES:
        raise ConfigurationError(
            "a registered schema must be a named Avro type (record, enum or fixed) given as "
            f"a JSON object, not {str(loaded)[:80]!r}")
    if not isinstance(loaded.get("name"), str):
        raise ConfigurationError(f"schema has no 'name': {str(loaded)[:80]!r}")
    return loaded


def interned(parsed: Any, _seen: set[int] | None = None) -> Any:
    """``parsed`` (a fastavro parsed schema) with every string in it interned, in place.

    fastavro's reader and writer dispatch on the schema's type names (``"string"``,
    ``"long"``, ...) by comparing them with their own interned constants, and look fields
    up by name; strings parsed from JSON are not interned, so each comparison fell through
    the identity check to a character compare, for every field of every record: 3.8 % of
    the instructions of a task's decode and encode (``benchmarks/results.md``).
    """
    seen = set() if _seen is None else _seen
    if id(parsed) in seen:
        return parsed
    seen.add(id(parsed))
    if isinstance(parsed, dict):
        items = list(parsed.items())
        parsed.clear()
        for key, value in items:
            parsed[sys.intern(key) if type(key) is str else key] = _interned_value(value, seen)
    elif isinstance(parsed, list):
        parsed[:] = [_interned_value(value, seen) for value in parsed]
    return parsed


def _interned_value(value: Any, seen: set[int]) -> Any:
    # Only exact str: sys.intern refuses subclasses (a StrEnum in a hand-built schema).
    return sys.intern(value) if type(value) is str else interned(value, seen)


def decode_body(data: bytes | memoryview, writer: Any, reader: Any = None,
                label: str = "record") -> Any:
    """Decode the Avro body that follows a single-object header, with parsed schemas.

    ``writer`` and ``reader`` are fastavro parsed schemas; pass ``reader=None`` when no
    resolution is needed (it is much faster). The header itself is not checked here. The
    whole buffer must be consumed: trailing bytes mean a corrupt or mis-framed record and
    are rejected. Any failure raises :class:`DecodeError` naming ``label``.
    """
    buf = io.BytesIO(data if isinstance(data, bytes) else bytes(data))
    buf.seek(HEADER_SIZE)
    try:
        record = schemaless_reader(buf, writer, reader)
    except Exception as exc:
        detail = str(exc)
        if len(detail) > 200:  # fastavro's resolution errors print both whole schemas
            detail = detail[:200] + "..."
        raise DecodeError(f"cannot decode {label}: {type(exc).__name__}: {detail}") from exc
    if buf.tell() != len(data):
        raise DecodeError(
            f"cannot decode {label}: {len(data) - buf.tell()} unexpected trailing byte(s)")
    return record


class SchemaRegistry:
    """Schemas by fingerprint (every version) and by full name (the latest registered)."""

    __slots__ = ("_by_fingerprint", "_by_name")

    def __init__(self) -> None:
        self._by_fingerprint: dict[bytes, Schema] = {}
        self._by_name: dict[str, Schema] = {}

    def __len__(self) -> int:
        return len(self._by_fingerprint)

    def register(self, definition: dict[str, Any] | str) -> Schema:
        """Add a schema version and make it the one :meth:`get` returns for its name.

        Idempotent: registering an identical definition again returns the Schema already
        held and changes nothing. A definition that differs only in attributes outside the
        canonical form (doc, defaults, aliases) replaces the held one under its fingerprint.
        """
        schema = Schema.from_definition(definition)
        known = self._by_fingerprint.get(schema.fingerprint)
        if known is not None and known.definition == schema.definition:
            return known
        self._by_fingerprint[schema.fingerprint] = schema
        self._by_name[schema.name] = schema
        return schema

    def load_dir(self, path: str | Path) -> list[Schema]:
        """Register every ``*.avsc`` file in ``path``, in file-name order.

        Because the latest registration wins by name, name versioned files so that they sort
        oldest first (``x.v1.avsc``, ``x.v2.avsc``).
        """
        directory = Path(path)
        if not directory.is_dir():
            raise ConfigurationError(f"schema directory {str(directory)!r} does not exist")
        schemas = []
        for file in sorted(directory.glob("*.avsc")):
            try:
                schemas.append(self.register(file.read_text(encoding="utf-8")))
            except ConfigurationError as exc:
                raise ConfigurationError(f"{file}: {exc}") from exc
        return schemas

    def get(self, name: str) -> Schema:
        """The latest registered schema with this full name (e.g. ``photos.ResizeRequest``)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigurationError(self._unknown_name_message(name)) from None

    def by_fingerprint(self, fp: bytes) -> Schema | None:
        """The schema version with this 8-byte fingerprint, or None."""
        return self._by_fingerprint.get(fp)

    def writer_of(self, data: bytes | memoryview) -> Schema:
        """The registered schema that wrote these single-object encoded bytes.

        Raises :class:`DecodeError` when the marker is missing or the fingerprint unknown.
        """
        if len(data) < HEADER_SIZE or data[:2] != MARKER:
            raise DecodeError(
                f"not an Avro single-object encoded record: expected the marker 0xc301 and "
                f"a {HEADER_SIZE}-byte header, got {bytes(data[:HEADER_SIZE]).hex() or 'nothing'}")
        fp = bytes(data[2:HEADER_SIZE])
        schema = self._by_fingerprint.get(fp)
        if schema is None:
            raise DecodeError(
                f"unknown schema fingerprint 0x{fp.hex()}, register the writer's schema "
                f"(known: {self._describe_known()})")
        return schema

    def encode(self, schema: Schema, record: Any, *, validate: bool = True) -> bytes:
        """Single-object encode ``record``: the schema's header, then the Avro body.

        Missing fields without a default and fields the schema does not declare always fail.
        fastavro's writer silently coerces some wrong values (``1.5`` or ``True`` into an
        ``int``, out-of-range ints), so with ``validate=True`` (the default) the record is
        first checked against the schema, costing about a microsecond for a small record.
        A mismatch raises :class:`PayloadSchemaError` naming the offending field.
        """
        if self._by_fingerprint.get(schema.fingerprint) is None:
            raise ConfigurationError(
                f"schema {schema.name} ({schema.fingerprint_hex}) is not registered here, so "
                "its records could not be decoded; register it first")
        try:
            if validate:
                avro_validation.validate(record, schema.parsed, raise_errors=True)
            buf = io.BytesIO()
            buf.write(schema.header)
            schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
        except Exception as exc:
            raise PayloadSchemaError(_mismatch_message(schema, record, exc)) from exc
        return buf.getvalue()

    def decode(self, data: bytes | memoryview,
               reader: Schema | None = None) -> tuple[Any, Schema]:
        """Decode single-object encoded bytes; return the record and the writer's schema.

        With a ``reader`` whose fingerprint differs from the writer's, the record is resolved
        into the reader's shape (added fields take their defaults, removed ones are
        dropped). Every kind of bad input raises :class:`DecodeError` and nothing else.
        """
        writer = self.writer_of(data)
        if reader is None or reader.fingerprint == writer.fingerprint:
            return decode_body(data, writer.parsed, None, writer.name), writer
        label = f"{writer.name} ({writer.fingerprint_hex}) as {reader.name}"
        return decode_body(data, writer.parsed, reader.parsed, label), writer

    def _describe_known(self) -> str:
        listed = [f"{s.name} {s.fingerprint_hex}" for s in self._by_fingerprint.values()]
        if not listed:
            return "none"
        more = len(listed) - _MAX_LISTED
        return ", ".join(listed[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")

    def _unknown_name_message(self, name: str) -> str:
        names = sorted(self._by_name)
        hint = difflib.get_close_matches(name, names, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        known = ", ".join(names[:_MAX_LISTED]) or "none"
        return (f"no schema named {name!r} is registered{suggestion} Known schemas: {known}. "
                "Use the full name (namespace.Name), register the schema, or put its .avsc "
                "file in the app's schema directory")



def _mismatch_message(schema: Schema, record: Any, exc: Exception) -> str:
    """Explain why ``record`` does not fit ``schema``; runs only after a failure."""
    if isinstance(exc, ValidationError):
        details = [_describe(error) for error in exc.errors]
    else:
        details = [str(exc)]
        try:
            avro_validation.validate(record, schema.parsed, raise_errors=True)
        except ValidationError as verr:
            details.extend(_describe(error) for error in verr.errors)
        except Exception:  # the explanation is best effort; the original error stands
            pass
    shown = "; ".join(detail[:_MAX_DETAIL] for detail in details)
    return f"record does not match schema {schema.name}: {shown}"


def _describe(error: Any) -> str:
    """One fastavro validation error in words (its own str() dumps whole parsed schemas)."""
    where = getattr(error, "field", "") or "the record"
    expected = _type_name(getattr(error, "schema", "?"))
    datum = getattr(error, "datum", None)
    if datum is None:
        return f"{where} is missing or null, expected {expected}"
    return f"{where} is {datum!r:.60} ({type(datum).__name__}), expected {expected}"


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return " or ".join(_type_name(branch) for branch in schema)
    if isinstance(schema, dict):
        return str(schema.get("name") or schema.get("type"))
    return str(schema)


def default_registry() -> SchemaRegistry:
    """A new registry holding the schemas bundled with streamtask (the envelope among them)."""
    registry = SchemaRegistry()
    registry.load_dir(BUNDLED_SCHEMAS_DIR)
    return registry
