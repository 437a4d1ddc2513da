"""Conductor's own test-harness workflow definitions load (and pass ``pipeline check``), or
fail with one error that lists everything unsupported; the pass rate must not drop."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamtask.conductor.definitions import walk
from streamtask.errors import ConfigurationError
from streamtask.model.workflow import load_workflow, passthrough_handlers
from streamtask.ops.check import WARNING, check

FIXTURES = Path(__file__).resolve().parent / "data" / "conductor"
TEST_ONLY = {"USER_TASK", "BLOCKING_SYSTEM_TASK"}
"""Task types only Conductor's test harness registers."""
PASSING_AT_LEAST = 67
"""Measured: 67 of the 69 load and pass check (see the README's workflow section)."""


def definitions() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(FIXTURES.glob("*.json")):
        definition = json.loads(path.read_text())
        if not any(task.get("type") in TEST_ONLY for task in walk(definition["tasks"])):
            found.append((path.name, definition))
    return found


@functools.cache
def registry() -> list[dict[str, Any]]:
    """Every fixture, for SUB_WORKFLOW tasks to find their children by name (as Conductor's
    specs register them)."""
    return [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]


def outcome(definition: dict[str, Any]) -> str | None:
    """None when the definition loads and passes check, else the (single) error."""
    children = registry()
    try:
        app = load_workflow(definition, passthrough_handlers(definition, children),
                            sub_workflows=children)
    except ConfigurationError as exc:
        return str(exc)
    problems = [line for line in check(app) if not line.startswith(WARNING)]
    return "; ".join(problems) or None


def test_the_fixture_set_is_complete() -> None:
    assert len(definitions()) == 69


def test_at_least_the_measured_share_of_conductors_fixtures_pass() -> None:
    failures = {name: error for name, definition in definitions()
                if (error := outcome(definition)) is not None}
    passed = len(definitions()) - len(failures)
    assert passed >= PASSING_AT_LEAST, "\n".join(f"{n}: {e}" for n, e in failures.items())


@pytest.mark.parametrize(("name", "definition"), definitions(), ids=lambda v: str(v)[:60])
def test_each_failure_is_one_line_naming_every_unsupported_type(
        name: str, definition: dict[str, Any]) -> None:
    error = outcome(definition)
    if error is None:
        return
    assert "\n" not in error
    supported = {"SIMPLE", "FORK_JOIN", "JOIN", "SWITCH", "DECISION", "DO_WHILE",
                 "TERMINATE", "SET_VARIABLE", "INLINE", "LAMBDA", "JSON_JQ_TRANSFORM", "HTTP",
                 "EXCLUSIVE_JOIN", "WAIT", "HUMAN", "SUB_WORKFLOW",
                 "FORK_JOIN_DYNAMIC", "PERMISSIVE", "START_WORKFLOW", "EVENT"}
    for task in walk(definition["tasks"]):
        kind = task.get("type", "SIMPLE")
        if kind not in supported:
            assert f"({kind})" in error, (name, kind, error)


def test_the_cli_checks_a_file_with_its_sub_workflows_and_task_defs() -> None:
    def streamtask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streamtask", *args], cwd=FIXTURES,
                              capture_output=True, text=True, timeout=60, check=False)

    parent, child = "fork_join_sub_workflow.json", \
        "simple_one_task_sub_workflow_integration_test.json"
    alone = streamtask("pipeline", "check", parent)
    assert alone.returncode == 1 and "--sub-workflow FILE" in alone.stderr
    assert "Traceback" not in alone.stderr
    given = streamtask("pipeline", "check", parent, "--sub-workflow", child)
    assert (given.returncode, given.stdout) == (0, "ok\n"), given.stderr
    shipping = Path(__file__).resolve().parent / "workflows"
    drawn = streamtask("graph", str(shipping / "shipping.json"), "--task-defs",
                       str(shipping / "shipping_taskdefs.json"))
    assert drawn.returncode == 0 and "price_check" in drawn.stdout, drawn.stderr
