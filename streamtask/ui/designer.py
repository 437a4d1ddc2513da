"""The designer's checks: a workflow definition's text to its diagram and its problems.

Runs exactly what ``streamtask pipeline check FILE.json`` runs (load with pass-through
handlers, then :func:`~streamtask.ops.check.check`) on the text being edited, and ties every
problem to the stages it names so the diagram can mark them. It never touches Kafka or a
running worker. Saving writes only ``*.json`` files inside the directory the console was
given, so a page cannot write anywhere else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamtask.errors import ConfigurationError
from streamtask.model.workflow import load_workflow, passthrough_handlers
from streamtask.ops.check import WARNING, check
from streamtask.ops.graph import svg

_QUOTED = re.compile(r"'([^']+)'")
_LOAD_PREFIX = re.compile(r"^workflow .+? cannot be loaded: ")
_SAVE_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*\.json$")

STARTER: dict[str, Any] = {
    "name": "my_workflow",
    "version": 1,
    "tasks": [
        {"name": "fetch", "taskReferenceName": "fetch", "type": "SIMPLE"},
        {"name": "process", "taskReferenceName": "process", "type": "SIMPLE",
         "retryCount": 2, "retryLogic": "FIXED", "retryDelaySeconds": 5},
    ],
}
"""The definition the designer starts with when the console was given none."""


@dataclass(frozen=True)
class Problem:
    """One line of the check, and the stages (task names) it is about."""

    text: str
    stages: list[str] = field(default_factory=list)

    @property
    def warning(self) -> bool:
        return self.text.startswith(WARNING)


@dataclass(frozen=True)
class Design:
    """What the designer shows for a definition: the picture (None when it does not load)
    and every problem found."""

    svg: str | None
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        """Loads and passes the check (warnings allowed), as ``pipeline check`` exits 0."""
        return self.svg is not None and not any(not p.warning for p in self.problems)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "svg": self.svg,
                "problems": [{"text": p.text, "stages": p.stages, "warning": p.warning}
                             for p in self.problems]}


def design(text: str) -> Design:
    """Parse, load and check the definition ``text``."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        return Design(None, [Problem(f"not valid JSON: {exc}")])
    if not isinstance(raw, dict):
        return Design(None, [Problem("a workflow definition is a JSON object with 'name' "
                                     "and 'tasks'")])
    try:
        app = load_workflow(raw, passthrough_handlers(raw))
    except ConfigurationError as exc:
        lines = _LOAD_PREFIX.sub("", str(exc)).split("; ")
        return Design(None, [_attributed(line, _task_names(raw)) for line in lines])
    names = set(app.stages)
    return Design(svg(app), [_attributed(line, names) for line in check(app)])


def _attributed(text: str, names: set[str]) -> Problem:
    """The problem with the known stage or task names it quotes."""
    named = [name for name in _QUOTED.findall(text) if name in names]
    return Problem(text, list(dict.fromkeys(named)))


def _task_names(raw: dict[str, Any]) -> set[str]:
    """Every task name in a definition, nested ones included (no validation)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("name"), str):
                found.add(value["name"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(raw.get("tasks"))
    return found


def save(directory: Path, name: str, text: str, *, overwrite: bool) -> Path:
    """Write the definition to ``directory/name``; returns the path written.

    Raises ConfigurationError when the name is not a relative ``*.json`` path, the text is
    not a JSON object, or the file exists and ``overwrite`` is false (FileExistsError).
    """
    if not _SAVE_NAME.match(name) or ".." in name.split("/"):
        raise ConfigurationError(f"{name!r} is not a file name to save to: use letters, "
                                 "digits, '.', '_', '-' and '/', ending in .json")
    try:
        if not isinstance(json.loads(text), dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise ConfigurationError(f"not saved: the definition is not a JSON object ({exc})") \
            from exc
    path = directory / name
    if path.exists() and not overwrite:
        raise FileExistsError(str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    return path
