"""The README's CLI reference names every command and every option the CLI has.

The commands and options come from the CLI itself (the click tree typer builds), so a
command or option added without its line in the README fails here. An option counts as
documented when the command's rows of the reference table name it (or its ``--no-``
form), or when the README's list of options every command shares names it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main

from streamtask.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def reference() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## CLI reference")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def leaf_commands(command: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    subs = getattr(command, "commands", None)
    if not subs:
        return {path: command}
    found: dict[tuple[str, ...], Any] = {}
    for name, sub in subs.items():
        found.update(leaf_commands(sub, (*path, name)))
    return found


def rows_by_command(section: str, paths: set[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Each table row, under the longest command path its first cell starts with."""
    rows: dict[tuple[str, ...], str] = {}
    for line in section.splitlines():
        cell = re.match(r"\| `streamtask ([^`]*)`", line)
        if not cell:
            continue
        words = tuple(cell.group(1).split())
        path = max((p for p in paths if words[:len(p)] == p), key=len, default=None)
        assert path is not None, f"a reference row names no command: {line[:80]}"
        rows[path] = rows.get(path, "") + line
    return rows


def shared_options(section: str) -> set[str]:
    match = re.search(r"^Options every command .*$", section, re.MULTILINE)
    assert match, "the reference lists the options every command shares"
    return set(re.findall(r"`(--[a-z-]+)", match.group(0)))


def test_the_reference_lists_every_command_and_option() -> None:
    commands = leaf_commands(typer.main.get_command(app))
    section = reference()
    rows = rows_by_command(section, set(commands))
    shared = shared_options(section)
    missing = [f"streamtask {' '.join(path)}" for path in sorted(commands) if path not in rows]
    for path, command in sorted(commands.items()):
        text = rows.get(path, "")
        for param in command.params:
            names = [n for n in (*param.opts, *param.secondary_opts) if n.startswith("--")]
            if not names or names == ["--help"]:
                continue
            if not any(re.search(rf"{re.escape(n)}(?![a-z-])", text) for n in names) and \
                    not set(names) & shared:
                missing.append(f"streamtask {' '.join(path)} {names[0]}")
    assert not missing, "not in the README's CLI reference: " + ", ".join(missing)


def test_every_option_says_what_it_does() -> None:
    """``--help`` explains each option (typer adds the defaults and env vars to it)."""
    for path, command in leaf_commands(typer.main.get_command(app)).items():
        assert (command.help or "").strip(), f"streamtask {' '.join(path)} has no help"
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option":
                assert (getattr(param, "help", "") or "").strip(), (
                    f"streamtask {' '.join(path)} {param.opts[0]} has no help")
