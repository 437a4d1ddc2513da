"""Conductor's ``${...}`` expressions, resolved against a run's context.

Follows Conductor's ``ParametersUtils``: every string inside a template (nested maps and
lists included) is resolved; other values pass through. A string that is exactly one
``${path}`` becomes the raw value (object, list, number, boolean or null); otherwise each
expression is replaced by its text in place (null as ``"null"``, maps and lists as JSON,
where Conductor would print Java's ``{a=1}``). Inner expressions resolve first, so
``${ref.output.${workflow.input.key}}`` works; ``$${...}`` stays literal as ``${...}``;
``${}`` is the empty string; ``${CPEWF_TASK_ID}`` is the id of the task being resolved.

Paths are a subset of JsonPath: an optional ``$.`` prefix, dotted names, ``[n]`` indexes
(negative ones count from the end), ``['key']`` and ``[*]``. A missing or unsupported path
gives null, as Conductor's suppressed exceptions do. Unlike Conductor, no environment
variable or JVM property of the server can be read through an expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

TASK_ID = "CPEWF_TASK_ID"
_INNERMOST = re.compile(r"\$\{((?:[^${}]|\$(?!\{))*)\}")
_ESCAPED = "\x00"
_TOKEN = re.compile(r"""\.?([^.\[\]]+)|\[\s*(-?\d+|\*|'[^']*'|"[^"]*")\s*\]""")


def resolve(template: Any, document: Mapping[str, Any], task_id: str = "") -> Any:
    """``template`` with every expression replaced, looked up in ``document``.

    ``document`` maps ``workflow`` and each task's reference name to their data (see
    :mod:`streamtask.conductor.context`).
    """
    if isinstance(template, str):
        return _resolve_text(template, document, task_id) if "${" in template else template
    if isinstance(template, Mapping):
        return {key: resolve(value, document, task_id) for key, value in template.items()}
    if isinstance(template, list):
        return [resolve(value, document, task_id) for value in template]
    return template


def _resolve_text(text: str, document: Mapping[str, Any], task_id: str) -> Any:
    text = text.replace("$${", _ESCAPED)
    while (match := _INNERMOST.search(text)) is not None:
        value = _lookup(match.group(1).strip(), document, task_id)
        if match.span() == (0, len(text)):
            return value
        text = text[:match.start()] + _as_text(value) + text[match.end():]
    return text.replace(_ESCAPED, "${")


def problems(template: Any) -> list[str]:
    """What is wrong with the expressions in ``template``, found before any run: a ``${``
    that is never closed, or a path outside the subset above (Conductor would resolve
    either to text or null without a word, hiding the mistake)."""
    found: list[str] = []
    pending = [template]
    while pending:
        value = pending.pop()
        if isinstance(value, Mapping):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and "${" in value:
            found.extend(_text_problems(value))
    return found


def _text_problems(text: str) -> list[str]:
    shown, found = text if len(text) <= 80 else text[:77] + "...", []
    text = text.replace("$${", _ESCAPED)
    while (match := _INNERMOST.search(text)) is not None:
        path = match.group(1).strip()
        if path and path != TASK_ID and not _parses(path):
            found.append(f"expression '${{{path}}}' in {shown!r} is not a path (use dotted "
                         "names, [n], ['key'] or [*]; JsonPath filters and deep scans are "
                         "not supported)")
        text = text[:match.start()] + "0" + text[match.end():]  # as an inner value would
    if "${" in text:
        found.append(f"{shown!r} opens an expression with '${{' that is never closed")
    return found


def _parses(path: str) -> bool:
    path = path[1:] if path.startswith("$") else path
    position = 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if match is None:
            return False
        position = match.end()
    return True


def _lookup(path: str, document: Mapping[str, Any], task_id: str) -> Any:
    if not path:
        return ""
    if path == TASK_ID:
        return task_id
    return evaluate(path, document)


def evaluate(path: str, document: Any) -> Any:
    """The value at ``path`` in ``document`` (None when absent; see the module docstring)."""
    path = path[1:] if path.startswith("$") else path
    values, multiple, position = [document], False, 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if match is None:
            return None
        position = match.end()
        name, index = match.group(1), match.group(2)
        if index == "*":
            values, multiple = [item for v in values for item in _children(v)], True
            continue
        key: Any = name if name is not None else _index_key(index)
        values = [found for v in values if (found := _child(v, key)) is not _MISSING]
        if not values and not multiple:
            return None
    return values if multiple else (values[0] if values else None)


_MISSING = object()


def _index_key(index: str) -> Any:
    return index[1:-1] if index[0] in "'\"" else int(index)


def _child(value: Any, key: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get(str(key), _MISSING)
    if isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
        return value[key]
    return _MISSING


def _children(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return list(value.values())
    return list(value) if isinstance(value, list) else []


def _as_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
