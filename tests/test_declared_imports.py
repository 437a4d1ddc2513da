"""Every third-party package the code, the tests and the benchmarks import is one that
pyproject.toml declares, so a fresh install runs them (a transitive dependency can vanish
when its parent changes, as click did when typer stopped requiring it)."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"streamtask", "tests", "benchmarks", "examples"}
# Imported only where an optional extra is installed, behind a guard that says so.
OPTIONAL: set[str] = {
    "quixstreams",  # the `bench` extra: bench_peers imports it only once quix_version() found it
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    """The distributions named in streamtask's requirements, extras included."""
    names = set()
    for requirement in metadata.requires("streamtask") or []:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match is not None, requirement
        names.add(_canonical(match.group(0)))
    return names


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_every_imported_package_is_declared() -> None:
    declared = declared_distributions()
    owners = metadata.packages_distributions()
    undeclared = []
    for folder in ("streamtask", "tests", "benchmarks", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module in imported_top_levels(path) - FIRST_PARTY - OPTIONAL:
                if module in sys.stdlib_module_names or module == "__future__":
                    continue
                dists = {_canonical(d) for d in owners.get(module, [])}
                if not dists & declared:
                    undeclared.append(f"{path.relative_to(ROOT)}: {module} "
                                      f"(from {sorted(dists) or 'nothing installed'})")
    assert not undeclared, "imports of undeclared packages:\n" + "\n".join(undeclared)
