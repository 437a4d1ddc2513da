#!/usr/bin/env python3
"""Move streamtask's non-worker modules into model/ kafka/ ops/ dev/ and rewrite every mention.

Run it from the root of a streamtask checkout, after every branch is merged::

    python3 .layout/move.py            # moves with `git mv`, rewrites, sorts imports, smoke-imports
    python3 .layout/move.py --dry-run  # prints what it would do, touches nothing

It is re-runnable: a module already at its new place is not moved again, and no rewrite
matches text it already rewrote, so a second run changes nothing ("0 files rewritten"). It
stops before touching anything when a module exists at both its old and its new place.

What it does, in order:

1. ``git mv streamtask/<old>.py streamtask/<pkg>/<new>.py`` for each row of ``MOVES`` (and
   creates each package's ``__init__.py``, a docstring only). The worker's modules
   (``WORKER``) are not touched, flat or already in ``streamtask/worker/``.
2. Rewrites, in every text file under streamtask/ tests/ benchmarks/ examples/ docs/ .ci/
   deploy/ compose/ and README.md, pyproject.toml, Makefile (tracked or untracked-not-ignored):

   - import statements, found with ``ast`` in Python files (at any depth, lazy imports too)
     and line by line in Markdown code: ``from streamtask import dlq`` becomes
     ``from streamtask.ops import deadletters as dlq`` (an alias keeps the local name, so no
     call site changes), ``from streamtask.dlq import X`` becomes
     ``from streamtask.ops.deadletters import X``, ``import streamtask.dlq`` likewise;
   - dotted module paths anywhere else (docstrings, ``:mod:`` roles, strings such as
     ``"pkg.mod:app"`` references, ``python -c`` code, monkeypatch targets):
     ``streamtask.dlq[.Name]`` becomes ``streamtask.ops.deadletters[.Name]``; a trailing
     ``.Name`` that is not defined in the module is left alone and reported (it is then
     something else, e.g. an Avro full name such as ``streamtask.bench.Probe``);
   - file paths ``streamtask/dlq.py`` become ``streamtask/ops/deadletters.py``.

   ``streamtask.kafka`` is special: it stays a valid name (now the package), so the bare name
   is left as it is, ``streamtask.kafka.<client API name>`` becomes
   ``streamtask.kafka.clients.<name>``, and ``from streamtask import kafka`` becomes
   ``from streamtask.kafka import clients as kafka``.

   Never rewritten: logger names (``getLogger("streamtask.dlq")``, ``logger="..."``) -- they
   are user-visible log channels that dashboards and logging configs filter on, not module
   paths, so they keep their names; Avro namespaces (``"namespace": "streamtask.bench"``) and
   ``.avsc`` files -- they are wire names.
3. ``ruff check --select I --fix`` on the rewritten Python files (import order changes when a
   module path does); lines the rewrite pushed past 100 characters are listed.
4. Lists every import, in the files it covers, of a streamtask module the tree does not have
   (read from the files: an editable install of another checkout would otherwise supply a
   module that is gone from this one, and hide it), then imports every module of the package
   in a fresh interpreter and lists any that fail.

What it cannot do is printed at the end under "review by hand": bare file names in prose
(``bench_peers.py``), ``from streamtask import <moved>`` inside strings, dotted names it
could not resolve, multi-line imports with comments inside, and flat modules that are in no
list (added by someone after this map was written; they stay where they are).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# old module under streamtask/  ->  new dotted path under streamtask
MOVES: dict[str, str] = {
    # model/: what work exists
    "app": "model.app",
    "pipeline": "model.pipeline",
    "envelope": "model.envelope",
    "schema_registry": "model.registry",  # not model/schemas.py: streamtask/schemas/ holds .avsc
    "workflow": "model.workflow",
    # kafka/: the only code touching confluent-kafka
    "kafka": "kafka.clients",
    "topics": "kafka.topics",
    "producer": "kafka.producer",
    "deadletter": "kafka.headers",  # retry and dead-letter headers (was confusable with dlq.py)
    "acls": "kafka.acls",
    # ops/: operator tools
    "dlq": "ops.deadletters",  # reading dead letters back and replaying them
    "check": "ops.check",
    "graph": "ops.graph",
    "status": "ops.status",
    "metrics": "ops.metrics",
    "trail": "ops.trail",
    "tracing": "ops.tracing",
    # dev/: out of the runtime path
    "broker": "dev.broker",  # LocalBroker (was confusable with kafka.py)
    "tls": "dev.tls",  # the local secured broker's throwaway CA (not client TLS settings)
    "cluster": "dev.cluster",
    "bench": "dev.bench",
    "bench_latency": "dev.bench_latency",
    "bench_peers": "dev.bench_peers",
    "demo": "dev.demo",
}

PACKAGES: dict[str, str] = {
    "model": "What work exists: the app and its stages, pipelines, the task envelope, the Avro\n"
             "schema registry and Conductor-style workflow definitions.",
    "kafka": "Kafka plumbing: the typed client factories and the transport through which the\n"
             "runtime opens every client (:mod:`.clients`), topics, the task producer, the\n"
             "retry and dead-letter headers, and the ACLs each role needs.",
    "ops": "Operator tools: dead-letter reading and replay, pipeline checks, the graph, status,\n"
           "metrics, the execution trail and tracing.",
    "dev": "Out of the runtime path: the local broker and cluster (and their throwaway TLS\n"
           "certificates), benchmarks and the demo.",
}

# Stay flat at the top level (the public API and pure leaves).
STAYS = {"__init__", "__main__", "errors", "config", "events", "retry", "clock", "logs",
         "loading"}
# Engineer `core` moves these into streamtask/worker/; this script leaves them alone.
WORKER = {"worker", "ordering", "runner", "runtime", "offsets", "commits", "window", "delays",
          "transactions", "routing", "joining", "join", "ratelimit", "supervisor",
          # the names they take in streamtask/worker/ (branch core)
          "lanes", "runners", "interpreter", "outcomes", "joins", "delivery", "job", "intake"}

ROOTS = ["streamtask", "tests", "benchmarks", "examples", "docs", ".ci", "deploy", "compose",
         "README.md", "pyproject.toml", "Makefile"]
SKIP_SUFFIXES = {".avsc", ".png", ".jpg", ".jpeg", ".gif", ".ico", ".svg", ".woff", ".woff2",
                 ".ttf", ".pyc", ".lock"}
MAX_LINE = 100

# Text right before a match that makes it a logger name or an Avro name, never a module path.
PROTECTED_BEFORE = re.compile(
    r"""(getLogger\(\s*["']|logger\s*=\s*["']|["']namespace["']\s*:\s*["']|namespace\s*=\s*["'])$""")

OLD_ALT = "|".join(sorted(MOVES, key=len, reverse=True))
DOTTED = re.compile(rf"(?<![\w.])streamtask\.(?P<mod>{OLD_ALT})\b(?P<attr>\.[A-Za-z_]\w*)?")
PATH = re.compile(rf"(?<![\w.-])streamtask/(?P<mod>{OLD_ALT})\.py\b")
BARE_FILE = re.compile(rf"(?<![\w/.-])(?P<mod>{OLD_ALT})\.py\b")
STRING_IMPORT = re.compile(rf"from streamtask import [^\n]*\b(?:{OLD_ALT})\b")
IMPORT_LINE = re.compile(r"^\s*(from\s+streamtask[\w.]*\s+import\s+.+|import\s+streamtask.*)$")


def new_path(old: str) -> str:
    return "streamtask." + MOVES[old]


def new_file(old: str) -> str:
    return "streamtask/" + MOVES[old].replace(".", "/") + ".py"


# A package named like an old module (kafka/ for kafka.py): its bare name stays valid.
COLLIDE = {old for old in MOVES if old in PACKAGES}


def submodules(package: str) -> set[str]:
    return {new.split(".", 1)[1] for new in MOVES.values() if new.split(".")[0] == package}


@dataclass
class Report:
    moved: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    long_lines: list[str] = field(default_factory=list)

    def note(self, where: str, what: str) -> None:
        self.review.append(f"{where}: {what}")


class Names:
    """Top-level names of each moved module (to tell ``streamtask.bench.fill`` from an Avro
    name ``streamtask.bench.Probe``), read from whichever place the module is at now."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, set[str]] = {}

    def of(self, old: str) -> set[str]:
        if old not in self._cache:
            self._cache[old] = self._read(old)
        return self._cache[old]

    def _read(self, old: str) -> set[str]:
        for candidate in (self.root / new_file(old), self.root / f"streamtask/{old}.py"):
            if candidate.exists():
                return top_level_names(candidate.read_text())
        return set()


def top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


# ---------------------------------------------------------------- import statements


def _alias(name: str, asname: str | None) -> str:
    return name if asname is None or asname == name else f"{name} as {asname}"


def _from_line(module: str, aliases: list[str], indent: str) -> str:
    one = f"{indent}from {module} import {', '.join(aliases)}"
    if len(one) <= MAX_LINE:
        return one
    inner = "".join(f"{indent}    {a},\n" for a in aliases)
    return f"{indent}from {module} import (\n{inner}{indent})"


def _moved_module(module: str) -> str | None:
    """The new dotted path of ``module`` if it names (something under) a moved module."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "streamtask" or parts[1] not in MOVES:
        return None
    old = parts[1]
    if old in COLLIDE and len(parts) > 2 and parts[2] in submodules(old):
        return None  # already the new package's submodule
    return ".".join([new_path(old), *parts[2:]])


def rewrite_from(node: ast.ImportFrom, names: Names) -> list[tuple[str, list[str]]] | None:
    """The statements (module, aliases) that replace ``node``, or None to keep it."""
    module = node.module or ""
    if node.level or not module.startswith("streamtask"):
        return None
    if module == "streamtask":
        groups: dict[str, list[str]] = {}
        for a in node.names:
            if a.name in MOVES:
                package, _, leaf = MOVES[a.name].rpartition(".")
                groups.setdefault(f"streamtask.{package}", []).append(
                    _alias(leaf, a.asname or a.name))
            else:
                groups.setdefault("streamtask", []).append(_alias(a.name, a.asname))
        if list(groups) == ["streamtask"]:
            return None
        return sorted(groups.items())
    collide = module.removeprefix("streamtask.")
    if collide in COLLIDE:  # `from streamtask.kafka import X`: X a submodule, or client API
        subs = submodules(collide)
        keep = [_alias(a.name, a.asname) for a in node.names if a.name in subs]
        move = [_alias(a.name, a.asname) for a in node.names if a.name not in subs]
        if not move:
            return None
        out = [(new_path(collide), move)]
        return [*out, (module, keep)] if keep else out
    target = _moved_module(module)
    if target is None:
        return None
    return [(target, [_alias(a.name, a.asname) for a in node.names])]


def rewrite_import(node: ast.Import) -> list[str] | None:
    changed = False
    parts = []
    for a in node.names:
        target = _moved_module(a.name)
        if target is None and a.name.removeprefix("streamtask.") in COLLIDE:
            target = new_path(a.name.removeprefix("streamtask."))
        changed |= target is not None
        parts.append(_alias(target or a.name, a.asname))
    return parts if changed else None


@dataclass
class Edit:
    start: int  # 0-based line
    col: int
    end: int
    end_col: int
    text: str


def import_edits(tree: ast.AST, lines: list[str], names: Names, where: str,
                 report: Report) -> list[Edit]:
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        text: str | None = None
        if isinstance(node, ast.ImportFrom) and node.level:
            report.note(f"{where}:{node.lineno}", "relative import: not rewritten; make it "
                                                  "absolute if it names a moved module or "
                                                  "sits in one")
            continue
        if isinstance(node, ast.ImportFrom):
            groups = rewrite_from(node, names)
            if groups is not None:
                indent = " " * node.col_offset
                text = "\n".join(_from_line(m, a, indent) for m, a in groups).lstrip()
        else:
            parts = rewrite_import(node)
            if parts is not None:
                text = "import " + ", ".join(parts)
        if text is None:
            continue
        assert node.end_lineno is not None and node.end_col_offset is not None
        span = lines[node.lineno - 1:node.end_lineno]
        if node.end_lineno > node.lineno and any("#" in line for line in span):
            report.note(f"{where}:{node.lineno}", "multi-line import with a comment inside: "
                                                   "comment dropped, put it back")
        prefix = lines[node.lineno - 1][:node.col_offset]
        if "\n" in text and prefix.strip():
            report.note(f"{where}:{node.lineno}", "split import after other code on the line")
        edits.append(Edit(node.lineno - 1, node.col_offset, node.end_lineno - 1,
                          node.end_col_offset, text))
    return edits


def apply_edits(lines: list[str], edits: list[Edit]) -> list[str]:
    """Apply non-overlapping edits, bottom-up so that earlier positions stay valid."""
    out = list(lines)
    for e in sorted(edits, key=lambda e: (e.start, e.col), reverse=True):
        head = out[e.start][:e.col]
        tail = out[e.end][e.end_col:]
        out[e.start:e.end + 1] = (head + e.text + tail).split("\n")
    return out


# ---------------------------------------------------------------- text rules


def rewrite_dotted(line: str, names: Names, where: str, report: Report) -> str:
    def replace(match: re.Match[str]) -> str:
        if PROTECTED_BEFORE.search(line[:match.start()]):
            return match.group(0)
        old, attr = match.group("mod"), match.group("attr")
        name = attr[1:] if attr else None
        if old in COLLIDE:
            if name is None or name in submodules(old):
                return match.group(0)
            if name in names.of(old):
                return new_path(old) + attr
            report.note(where, f"`{match.group(0)}`: `{name}` is not in {new_path(old)}; "
                               "left alone")
            return match.group(0)
        if name is not None and name not in names.of(old):
            report.note(where, f"`{match.group(0)}`: `{name}` is not defined in that module "
                               "(an Avro name?); left alone")
            return match.group(0)
        return new_path(old) + (attr or "")

    return DOTTED.sub(replace, line)


def rewrite_paths(line: str) -> str:
    return PATH.sub(lambda m: new_file(m.group("mod")), line)


def rewrite_text_import(line: str, names: Names) -> str:
    """A whole-line import in non-Python text (Markdown code blocks, shell snippets)."""
    if not IMPORT_LINE.match(line):
        return line
    indent = line[:len(line) - len(line.lstrip())]
    try:
        tree = ast.parse(line.strip())
    except SyntaxError:
        return line
    node = tree.body[0] if tree.body else None
    if isinstance(node, ast.ImportFrom):
        groups = rewrite_from(node, names)
        if groups is not None:
            return "\n".join(indent + f"from {m} import {', '.join(a)}" for m, a in groups)
    elif isinstance(node, ast.Import):
        parts = rewrite_import(node)
        if parts is not None:
            return indent + "import " + ", ".join(parts)
    return line


INLINE_IMPORT = re.compile(rf"from streamtask import [\w ,]*\b(?:{OLD_ALT})\b[\w ,]*")


def rewrite_inline_imports(line: str, names: Names) -> str:
    """``from streamtask import tracing`` inside a string (``python -c`` code): statements
    joined with "; " so that the string stays one line."""
    def replace(match: re.Match[str]) -> str:
        text = match.group(0).rstrip(" ,")
        node = ast.parse(text).body[0]
        assert isinstance(node, ast.ImportFrom)
        groups = rewrite_from(node, names)
        if groups is None:
            return match.group(0)
        rest = match.group(0)[len(text):]
        return "; ".join(f"from {m} import {', '.join(a)}" for m, a in groups) + rest

    return INLINE_IMPORT.sub(replace, line)


def review_leftovers(line: str, where: str, report: Report, python: bool) -> None:
    for m in BARE_FILE.finditer(line):
        old = m.group("mod")
        if MOVES[old].rpartition(".")[2] != old:  # a kept base name still matches
            report.note(where, f"bare file name `{m.group(0)}`: now {new_file(old)}?")
    if python and STRING_IMPORT.search(line):
        report.note(where, "`from streamtask import <moved module>` inside a string")


def import_lines(tree: ast.AST | None) -> set[int]:
    """0-based numbers of the lines real import statements occupy (left to the AST rules)."""
    found: set[int] = set()
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.end_lineno is not None:
            found.update(range(node.lineno - 1, node.end_lineno))
    return found


def rewrite_python(source: str, names: Names, where: str, report: Report) -> str:
    try:
        tree: ast.AST | None = ast.parse(source)
    except SyntaxError as exc:
        report.note(where, f"not parseable ({exc.msg}); only text rules applied")
        tree = None
    lines = source.split("\n")
    skip = import_lines(tree)
    # Text rules first (they keep line numbers and columns), then the import statements.
    for number, line in enumerate(lines):
        here = f"{where}:{number + 1}"
        if number not in skip:
            line = rewrite_inline_imports(line, names)
            lines[number] = rewrite_paths(rewrite_dotted(line, names, here, report))
        review_leftovers(lines[number], here, report, python=number not in skip)
    if tree is not None:
        lines = apply_edits(lines, import_edits(tree, lines, names, where, report))
    return "\n".join(lines)


def rewrite_other(source: str, names: Names, where: str, report: Report) -> str:
    out = []
    for number, line in enumerate(source.split("\n"), 1):
        here = f"{where}:{number}"
        new = rewrite_text_import(line, names)
        if new == line:
            new = rewrite_inline_imports(line, names)
            new = rewrite_paths(rewrite_dotted(new, names, here, report))
        review_leftovers(new, here, report, python=False)
        out.append(new)
    return "\n".join(out)


# ---------------------------------------------------------------- files and moves


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout


def files_to_rewrite(root: Path) -> list[Path]:
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                 *ROOTS).split("\0")
    paths = []
    for rel in sorted(set(filter(None, listed))):
        path = root / rel
        if rel.startswith(".layout/") or not path.is_file() or path.suffix in SKIP_SUFFIXES:
            continue
        if rel.startswith("docs/") and path.suffix != ".md":
            continue
        paths.append(path)
    return paths


def plan_moves(root: Path, report: Report) -> list[tuple[Path, Path]]:
    moves, clashes = [], []
    for old in MOVES:
        src, dst = root / f"streamtask/{old}.py", root / new_file(old)
        if src.exists() and dst.exists():
            clashes.append(f"streamtask/{old}.py and {new_file(old)} both exist")
        elif src.exists():
            moves.append((src, dst))
        elif not dst.exists():
            report.note(f"streamtask/{old}.py", "in the map but at neither place; skipped")
    if clashes:
        sys.exit("move.py: refusing to run, a module is at its old and its new place:\n  "
                 + "\n  ".join(clashes) + "\nmerge the two by hand, delete one, and rerun")
    flat = {p.stem for p in (root / "streamtask").glob("*.py")}
    for stem in sorted(flat - STAYS - WORKER - set(MOVES)):
        report.note(f"streamtask/{stem}.py", "in no list: left at the top level; move by hand "
                                             "if it belongs in a subpackage")
    return moves


FILE_PARENT = re.compile(r"(Path\(__file__\)(?:\.resolve\(\))?)\.parent\b")


def fix_file_relative(path: Path, where: str, report: Report) -> None:
    """A moved module sits one folder deeper: ``Path(__file__).parent`` gains a ``.parent``.
    Run only on the move itself, so that a second run does not add another."""
    source = path.read_text()
    if "__file__" not in source:
        return
    fixed = FILE_PARENT.sub(r"\1.parent.parent", source)
    path.write_text(fixed)
    for number, line in enumerate(fixed.split("\n"), 1):
        if "__file__" in line:
            report.note(f"{where}:{number}", "uses __file__ (one folder deeper now); check: "
                                             + line.strip())


def tracked(root: Path, path: Path) -> bool:
    rel = str(path.relative_to(root))
    return bool(git(root, "ls-files", "--", rel).strip())


def do_moves(root: Path, moves: list[tuple[Path, Path]], report: Report, dry: bool) -> None:
    for package, doc in PACKAGES.items():
        init = root / "streamtask" / package / "__init__.py"
        if init.exists():
            continue
        report.moved.append(f"create {init.relative_to(root)}")
        if not dry:
            init.parent.mkdir(exist_ok=True)
            init.write_text(f'"""{doc}"""\n')
            git(root, "add", "--", str(init.relative_to(root)))
    for src, dst in moves:
        rel_src, rel_dst = str(src.relative_to(root)), str(dst.relative_to(root))
        report.moved.append(f"git mv {rel_src} {rel_dst}")
        if dry:
            continue
        dst.parent.mkdir(exist_ok=True)
        if tracked(root, src):
            git(root, "mv", rel_src, rel_dst)
        else:
            report.note(rel_src, "untracked: moved without git; `git add` it")
            shutil.move(src, dst)
        fix_file_relative(dst, rel_dst, report)


def rewrite_all(root: Path, report: Report, dry: bool) -> list[Path]:
    names = Names(root)
    changed = []
    for path in files_to_rewrite(root):
        rel = str(path.relative_to(root))
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if "\0" in source or ("streamtask" not in source and not BARE_FILE.search(source)):
            continue
        if path.suffix == ".py":
            new = rewrite_python(source, names, rel, report)
        else:
            new = rewrite_other(source, names, rel, report)
        if new != source:
            changed.append(path)
            report.rewritten.append(rel)
            if not dry:
                path.write_text(new, encoding="utf-8")
    return changed


def tool(root: Path, name: str) -> str | None:
    local = root / ".venv" / "bin" / name
    return str(local) if local.exists() else shutil.which(name)


def sort_imports(root: Path, files: Iterable[Path], report: Report) -> None:
    py = [str(p.relative_to(root)) for p in files if p.suffix == ".py"]
    ruff = tool(root, "ruff")
    if not py:
        return
    if ruff is None:
        report.note("ruff", "not found: run `ruff check --select I --fix` on the changed files")
    else:
        subprocess.run([ruff, "check", "--quiet", "--select", "I", "--fix", *py], cwd=root,
                       check=False, capture_output=True)
    for rel in py:
        path = root / rel
        source = path.read_text()
        wrapped = rewrap_prose(source)
        if wrapped != source:
            path.write_text(wrapped)
        for number, line in enumerate(wrapped.split("\n"), 1):
            if len(line) > MAX_LINE and "streamtask" in line:
                report.long_lines.append(f"{rel}:{number} ({len(line)} chars)")


def prose_lines(source: str) -> set[int]:
    """0-based numbers of lines that are wholly inside a docstring (a string statement)."""
    found: set[int] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return found
    for node in ast.walk(tree):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str) and node.end_lineno is not None):
            found.update(range(node.lineno - 1, node.end_lineno))
    return found


def rewrap_prose(source: str) -> str:
    """Break a docstring line the rewrite pushed past the limit at its last space outside
    inline literals, continuing at the line's indentation (prose only, never code)."""
    lines = source.split("\n")
    prose = prose_lines(source)
    out: list[str] = []
    for number, line in enumerate(lines):
        if len(line) <= MAX_LINE or "streamtask" not in line or number not in prose:
            out.append(line)
            continue
        indent = line[:len(line) - len(line.lstrip())]
        cut = _break_at(line)
        if cut is None:
            out.append(line)
            continue
        out.extend([line[:cut].rstrip(), indent + line[cut:].lstrip()])
    return "\n".join(out)


def _break_at(line: str) -> int | None:
    """The last space before the limit that is outside ``literals`` and `roles`."""
    ticks = 0
    best = None
    for index, char in enumerate(line[:MAX_LINE + 1]):
        if char == "`":
            ticks += 1
        elif char == " " and ticks % 2 == 0 and line[:index].strip():
            best = index
    indent = len(line) - len(line.lstrip())
    return best if best is not None and best > indent + len('"""') else None


def module_file(root: Path, module: str) -> Path | None:
    """The file of a streamtask module in this tree (a package's ``__init__.py``), or None."""
    parts = module.split(".")
    for path in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if path.is_file():
            return path
    return None


def dangling_imports(root: Path, report: Report) -> None:
    """Every import of a streamtask module that this tree does not have, in any Python file
    the rewrite covers. Checked on the files, not by importing: an editable install of
    another checkout would quietly supply a module that is gone from this one."""
    for path in files_to_rewrite(root):
        if path.suffix != ".py":
            continue
        try:
            tree = ast.parse(path.read_text())
        except SyntaxError:
            continue
        rel = str(path.relative_to(root))
        for node in ast.walk(tree):
            for missing in _missing(root, node):
                report.note(f"{rel}:{getattr(node, 'lineno', 0)}", f"imports {missing}, which "
                                                                   "this tree does not have")


def _missing(root: Path, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names
                if a.name.split(".")[0] == "streamtask" and module_file(root, a.name) is None]
    if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
        return []
    if node.module.split(".")[0] != "streamtask":
        return []
    source = module_file(root, node.module)
    if source is None:
        return [node.module]
    if source.name != "__init__.py":
        return []
    defined = top_level_names(source.read_text())
    return [f"{node.module}.{a.name}" for a in node.names
            if a.name not in defined and module_file(root, f"{node.module}.{a.name}") is None
            and "__getattr__" not in defined]


def smoke_import(root: Path, report: Report) -> None:
    python = tool(root, "python") or sys.executable
    # Without the editable finder of whatever checkout the venv was installed from: a module
    # missing here must fail, not be found there.
    code = ("import importlib, pkgutil, sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path\n"
            "                    if 'editable' not in getattr(f, '__module__', '')]\n"
            "import streamtask\n"
            "bad = []\n"
            "for m in pkgutil.walk_packages(streamtask.__path__, 'streamtask.'):\n"
            "    if m.name.endswith('__main__'):\n"
            "        continue\n"
            "    try:\n"
            "        importlib.import_module(m.name)\n"
            "    except BaseException as e:\n"
            "        bad.append(f'{m.name}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(bad))\n")
    done = subprocess.run([python, "-c", code], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, check=False)
    for line in filter(None, (done.stdout + (done.stderr if done.returncode else "")).split("\n")):
        report.note("import", line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout's root")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--no-smoke", action="store_true", help="skip the import smoke test")
    args = parser.parse_args()
    root = args.root.resolve()
    if not (root / "streamtask" / "__init__.py").exists():
        sys.exit(f"move.py: {root} is not a streamtask checkout (no streamtask/__init__.py)")
    report = Report()
    moves = plan_moves(root, report)
    if args.dry_run:
        # Rewrites are computed against the files where they are now.
        do_moves(root, moves, report, dry=True)
        rewrite_all(root, report, dry=True)
    else:
        do_moves(root, moves, report, dry=False)
        changed = rewrite_all(root, report, dry=False)
        sort_imports(root, changed, report)
        dangling_imports(root, report)
        if not args.no_smoke:
            smoke_import(root, report)
    verb = "would be " if args.dry_run else ""
    print(f"{len(report.moved)} moves {verb}done, {len(report.rewritten)} files {verb}rewritten")
    for line in report.moved:
        print("  " + line)
    for line in report.rewritten:
        print("  rewrote " + line)
    if report.long_lines:
        print(f"\nlines over {MAX_LINE} characters after the rewrite (rewrap by hand):")
        print("\n".join("  " + line for line in report.long_lines))
    if report.review:
        print("\nreview by hand:")
        print("\n".join("  " + line for line in dict.fromkeys(report.review)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
