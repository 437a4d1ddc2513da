"""The producer sits below the app: ``app`` imports ``producer`` (for ``App.send``) and
nothing ``producer`` imports, directly or through other streamtask modules, at module
level, lazily or for type checking only, leads back to ``app``. A cycle here is what made
``App.producer`` import lazily and ``TaskProducer`` take an ``App`` it could only name under
``TYPE_CHECKING``; this test keeps it from coming back."""

from __future__ import annotations

import ast
from pathlib import Path

import streamtask

PACKAGE = Path(streamtask.__file__).resolve().parent


def _source(module: str) -> Path | None:
    """The file of a streamtask module, or None if ``module`` is no module (a class...)."""
    parts = module.split(".")[1:]
    for path in (PACKAGE.joinpath(*parts).with_suffix(".py"),
                 PACKAGE.joinpath(*parts, "__init__.py")):
        if parts and path.is_file():
            return path
    return None


def streamtask_imports(module: str) -> set[str]:
    """Every streamtask module ``module`` names in any import statement, at any depth:
    ``from streamtask.x import y`` counts ``streamtask.x``, and ``streamtask.x.y`` too when
    ``y`` is a module."""
    path = _source(module)
    if path is None:
        return set()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if _source(name) is not None}


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for name in streamtask_imports(todo.pop()) - seen:
            seen.add(name)
            todo.append(name)
    return seen


def test_producer_never_imports_the_app() -> None:
    app, producer = streamtask.App.__module__, streamtask.TaskProducer.__module__
    assert producer in streamtask_imports(app)
    assert app not in reachable(producer), f"{producer} reaches {app} again"


def test_shipped_code_never_imports_unittest() -> None:
    """Test doubles stay in tests: shipped code reaches Kafka through ``app.transport`` and
    takes timing hooks, never ``unittest.mock`` patches (the bench once patched
    ``kafka.consumer``)."""
    offenders = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Import | ast.ImportFrom)
                 and any(name.split(".")[0] == "unittest" for name in _imported(node))]
    assert not offenders, offenders


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""] if node.level == 0 else []
    return [alias.name for alias in node.names]
