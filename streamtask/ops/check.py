"""``pipeline check``: every problem of an app's definition, found before anything runs.

:func:`check` looks at what :meth:`App.validate <streamtask.model.app.App.validate>` cannot see
one stage at a time: whether each stage's declared ``output`` schema can be read as the
``payload`` of every stage it sends to (Avro schema resolution, writer = output, reader =
payload), whether every topic name is one Kafka accepts, whether each retry ladder is sane,
whether every reference and join branch leads where it should. Cycles are legal (a stage
may loop back) but are reported as ``warning:`` lines. Stages nothing reaches are entry
points and are fine.

:func:`resolution_problems` is the schema checker on its own, following the Avro
specification's schema-resolution rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from streamtask.model.app import App, Stage
from streamtask.model.pipeline import Switch, targets_of

WARNING = "warning: "
"""The prefix of a line that reports something legal but suspicious (a cycle)."""

_TOPIC = re.compile(r"^[A-Za-z0-9._-]+$")
_MAX_TOPIC = 249
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_PROMOTIONS = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"),
               ("long", "double"), ("float", "double"), ("string", "bytes"),
               ("bytes", "string")}
_NAMED = ("record", "error", "enum", "fixed")
_COMPLEX = {*_NAMED, "array", "map"}


# -- Avro schema resolution ------------------------------------------------------------------


def resolution_problems(writer: Any, reader: Any, *, record_names: bool = True) -> list[str]:
    """Why data written with ``writer`` cannot always be read with ``reader`` (empty: it can).

    Both are Avro schemas as JSON-like values (a dict, a list for a union, a type name).
    Named types may be referred to by name, within namespaces, as the specification allows.
    ``record_names=False`` compares records by their fields only (see :func:`check`).
    """
    resolution = _Resolution(_index(writer), _index(reader), record_names)
    return resolution.compare(writer, reader, "")


def _index(schema: Any, namespace: str = "",
           table: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named type of ``schema`` by full name; references are resolved through it."""
    table = {} if table is None else table
    if isinstance(schema, list):
        for branch in schema:
            _index(branch, namespace, table)
    elif isinstance(schema, Mapping):
        kind = schema.get("type")
        if kind in _NAMED and isinstance(schema.get("name"), str):
            full = _full_name(schema["name"], schema.get("namespace") or namespace)
            table[full] = schema
            namespace = full.rpartition(".")[0]
        for field in schema.get("fields", []) if kind in ("record", "error") else []:
            _index(field.get("type"), namespace, table)
        for key in ("items", "values"):
            if key in schema:
                _index(schema[key], namespace, table)
        if isinstance(kind, list | Mapping):
            _index(kind, namespace, table)
    return table


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _short(name: str) -> str:
    return name.rpartition(".")[2]


class _Resolution:
    """One writer/reader comparison; remembers pairs under way so recursive types end."""

    def __init__(self, writers: dict[str, Any], readers: dict[str, Any],
                 record_names: bool) -> None:
        self.writers, self.readers = writers, readers
        self.record_names = record_names
        self.seen: set[tuple[int, int]] = set()

    def resolve(self, schema: Any, table: dict[str, Any]) -> Any:
        """A type name as its definition; ``{"type": "int"}`` as ``"int"``."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            found = table.get(schema)
            if found is None:  # a short name used inside a namespace
                found = next((v for k, v in table.items() if _short(k) == schema), None)
            return found if found is not None else schema
        kind = schema.get("type") if isinstance(schema, Mapping) else None
        if isinstance(kind, list | Mapping) or (isinstance(kind, str) and kind not in _COMPLEX):
            return self.resolve(kind, table)  # {"type": "int"}, {"type": "a.Named"}, ...
        return schema

    def compare(self, writer: Any, reader: Any, where: str) -> list[str]:
        writer, reader = self.resolve(writer, self.writers), self.resolve(reader, self.readers)
        if isinstance(writer, list):  # every branch the writer may pick must be readable
            return [p for branch in writer for p in self.compare(branch, reader, where)]
        if isinstance(reader, list):
            if any(not self.compare(writer, branch, where) for branch in reader):
                return []
            return [f"{where or 'the value'}: {_describe(writer)} matches no branch of the "
                    f"reader's union [{', '.join(_describe(b) for b in reader)}]"]
        w_kind, r_kind = _kind(writer), _kind(reader)
        if (w_kind == r_kind and w_kind in _PRIMITIVES) or (w_kind, r_kind) in _PROMOTIONS:
            return []
        if w_kind != r_kind:
            return [f"{where or 'the value'}: the writer's {_describe(writer)} cannot be read "
                    f"as {_describe(reader)}"]
        return self.compare_complex(writer, reader, w_kind, where)

    def compare_complex(self, writer: Mapping[str, Any], reader: Mapping[str, Any],
                        kind: str, where: str) -> list[str]:
        if kind == "array":
            return self.compare(writer["items"], reader["items"], f"{where or 'array'}[]")
        if kind == "map":
            return self.compare(writer["values"], reader["values"], f"{where or 'map'}{{}}")
        label = where or reader.get("name", "the value")
        if (kind != "record" or self.record_names) and not _names_match(writer, reader):
            return [f"{label}: the writer's {kind} {writer.get('name')!r} is not the reader's "
                    f"{reader.get('name')!r} (nor one of its aliases)"]
        if kind == "fixed" and writer.get("size") != reader.get("size"):
            return [f"{label}: fixed size {writer.get('size')} cannot be read as size "
                    f"{reader.get('size')}"]
        if kind == "enum":
            extra = [s for s in writer.get("symbols", []) if s not in reader.get("symbols", [])]
            if extra and "default" not in reader:
                return [f"{label}: the reader's enum lacks symbol(s) {', '.join(extra)} and "
                        "has no default"]
            return []
        if kind == "record":
            return self.compare_records(writer, reader, where)
        return []

    def compare_records(self, writer: Mapping[str, Any], reader: Mapping[str, Any],
                        where: str) -> list[str]:
        pair = (id(writer), id(reader))
        if pair in self.seen:  # a recursive type: assume compatible while checking it
            return []
        self.seen.add(pair)
        written = {f["name"]: f for f in writer.get("fields", [])}
        found = []
        for field in reader.get("fields", []):
            path = f"{where}.{field['name']}" if where else field["name"]
            source = next((written[n] for n in [field["name"], *field.get("aliases", [])]
                           if n in written), None)
            if source is not None:
                found += self.compare(source.get("type"), field.get("type"), path)
            elif "default" not in field:
                found.append(f"{path}: the reader needs this field, the writer does not "
                             "write it and it has no default")
        return found


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    return "record" if kind == "error" else str(kind)


def _names_match(writer: Mapping[str, Any], reader: Mapping[str, Any]) -> bool:
    names = {_short(str(reader.get("name")))} | {_short(a) for a in reader.get("aliases", [])}
    return _short(str(writer.get("name"))) in names


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, Mapping) and schema.get("name"):
        return f"{_kind(schema)} {schema['name']}"
    return _kind(schema)


# -- the app ---------------------------------------------------------------------------------


def check(app: App) -> list[str]:
    """Every problem of ``app`` at once, one line each; an empty list means it is sound.

    Lines starting with :data:`WARNING` are legal but suspicious. Records are compared by
    their fields, not their names: a result travels as a dict and is written with the
    receiving stage's own schema, so ``orders.Validated`` may feed ``orders.Payment``.
    """
    return [*_references(app), *_joins(app), *_schemas(app), *_topics(app), *_retries(app),
            *_cycles(app)]


def _edges(stage: Stage) -> Iterator[tuple[str, str]]:
    """(target, what) for every stage ``stage`` sends to by declaration."""
    then = stage.then
    for target in targets_of(then):
        yield target, "switch" if isinstance(then, Switch) else "then"
    if stage.compensate is not None:
        yield stage.compensate, "compensate"


def _references(app: App) -> Iterator[str]:
    for stage in app.stages.values():
        for target, what in _edges(stage):
            if target not in app.stages:
                yield (f"stage {stage.name!r}: {what} target {target!r} is not a stage of app "
                       f"{app.name!r}")
        for branch in stage.join.branches if stage.join else ():
            if branch not in app.stages:
                yield f"join {stage.name!r}: branch {branch!r} is not a stage of app {app.name!r}"


def _joins(app: App) -> Iterator[str]:
    """Each branch must send to its join, and one fork must lead to all the branches."""
    forks = [s for s in app.stages.values() if isinstance(s.then, tuple)]
    for join in app.stages.values():
        if join.join is None:
            continue
        branches = [b for b in join.join.branches if b in app.stages]
        for branch in branches:
            if join.name not in targets_of(app.stages[branch].then):
                yield (f"join {join.name!r}: branch {branch!r} does not send its results to "
                       f"the join (its then is {app.stages[branch].then!r})")
        inside = [b for b in branches if b not in join.join.external]
        if len(inside) > 1 and not any(set(inside) <= _reachable(app, fork.name, join.name)
                                       for fork in forks):
            yield (f"join {join.name!r}: no fork (a stage with then=(a, b, ...)) leads to all "
                   f"of its branches {', '.join(inside)}, so it would wait forever")


def _reachable(app: App, start: str, stop: str) -> set[str]:
    """Stages reachable from ``start`` by ``then`` edges, not passing through ``stop``."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        for target in targets_of(app.stages[name].then) if name in app.stages else ():
            if target not in seen and target != stop:
                seen.add(target)
                todo.append(target)
    return seen


def _schemas(app: App) -> Iterator[str]:
    """Output -> downstream payload; payload -> compensating payload (it gets the same)."""
    for stage in app.stages.values():
        pairs = [(stage.output, target) for target in targets_of(stage.then)]
        pairs += [(stage.payload, stage.compensate)] if stage.compensate else []
        for writer, name in pairs:
            target = app.stages.get(name)
            if writer is None or target is None or target.payload is None or target.join:
                continue  # undeclared, or a join (its input is the merged dict)
            for problem in resolution_problems(writer.definition, target.payload.definition,
                                               record_names=False):
                yield (f"stage {stage.name!r} -> {target.name!r}: {writer.name} cannot be "
                       f"read as {target.payload.name}: {problem}")


def _topics(app: App) -> Iterator[str]:
    seen: dict[str, str] = {}
    for stage in app.stages.values():
        changelog = [stage.changelog_topic] if stage.join else []
        for topic in [stage.topic, *stage.retry_topics, stage.dlq_topic, *changelog]:
            if len(topic) > _MAX_TOPIC or not _TOPIC.match(topic) or topic in (".", ".."):
                yield (f"stage {stage.name!r}: topic {topic!r} is not a valid Kafka topic name "
                       f"(1-{_MAX_TOPIC} letters, digits, '.', '_', '-'; it has {len(topic)})")
            # Kafka refuses topics that differ only in '.' versus '_' (metric names collide)
            folded = topic.replace(".", "_")
            if seen.setdefault(folded, topic) != topic:
                yield (f"stage {stage.name!r}: topic {topic!r} collides with "
                       f"{seen[folded]!r} ('.' and '_' are the same to Kafka's metrics)")


def _retries(app: App) -> Iterator[str]:
    """The policy's own problems; else each level against the retention of its topic."""
    for stage in app.stages.values():
        policy = stage.retry
        problems = policy.problems()
        yield from (f"stage {stage.name!r}: retry policy: {p}" for p in problems)
        if problems:  # they include retention against the longest delay: no repeating it
            continue
        retention = policy.topic_retention()
        for delay in policy.ladder():
            if retention <= delay * (1 + policy.jitter):
                yield (f"stage {stage.name!r}: retry level {delay:g}s keeps records only "
                       f"{retention:g}s, so retried tasks would expire before they are due")


def _cycles(app: App) -> Iterator[str]:
    """One warning per cycle of ``then`` edges (found by depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> Iterator[str]:
        state[name] = 1
        path.append(name)
        for target in targets_of(app.stages[name].then):
            if target not in app.stages:
                continue
            if state.get(target) == 1:
                loop = [*path[path.index(target):], target]
                yield f"{WARNING}cycle {' -> '.join(loop)}: tasks can go round it forever"
            elif target not in state:
                yield from visit(target)
        path.pop()
        state[name] = 2

    for name in app.stages:
        if name not in state:
            yield from visit(name)
