"""A failureWorkflow named by the run's input (``$workflow.input.failureWfName``, as in
Conductor's own fixture): the named one runs; a name the app was not loaded with ends the
run FAILED with an error in its output; no name runs nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtask import Task
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops.check import WARNING, check
from streamtask.retry import DeadLetter
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running

FIXTURES = Path(__file__).resolve().parent / "data" / "conductor"
FAILURE = FIXTURES / "failure_workflow_for_terminate_task_workflow.json"


def first(task: Task) -> dict[str, str]:
    if task.payload["p1"] == "fail":
        raise DeadLetter("declined")
    return {"op": "one"}


@pytest.mark.timeout(240)
def test_the_failure_workflow_the_input_names_runs(kafka, unique) -> None:
    finished = Finished()
    app = load_workflow(FIXTURES / "simple_workflow_1_integration_test.json",
                        {"integration_task_1": first,
                         "integration_task_2": lambda task: {"uuid": "u"}},
                        kafka=kafka.settings, name=f"fn{unique}", sub_workflows=[FAILURE],
                        on_end=finished.on_end)
    assert [p for p in check(app) if not p.startswith(WARNING)] == []
    ensure(app)
    named = app.start({"param1": "fail", "a": 1, "failureWfName": "failure_workflow"})
    unknown = app.start({"param1": "fail", "failureWfName": "no_such_workflow"})
    unnamed = app.start({"param1": "fail"})
    fine = app.start({"param1": "ok", "failureWfName": "failure_workflow"})
    runs = {named, unknown, unnamed, fine}
    with running(app):
        wait_until(lambda: runs <= set(finished.runs), 180, "every run ended",
                   lambda: str(finished.runs))
    one = finished.runs[named]
    assert one.status == "FAILED" and "declined" in (one.reason or "")
    assert one.output["conductor.failure_workflow"] == {
        "status": "COMPLETED", "output": {"result": {"testvalue": True}}}
    two = finished.runs[unknown]
    assert two.status == "FAILED" and "declined" in (two.reason or "")
    error = two.output["conductor.failure_workflow"]
    assert error["status"] == "FAILED"
    assert "'no_such_workflow'" in error["error"] and "failure_workflow" in error["error"]
    three = finished.runs[unnamed]
    assert three.status == "FAILED" and "declined" in (three.reason or "")
    assert "conductor.failure_workflow" not in (three.output or {})
    four = finished.runs[fine]
    assert four.status == "COMPLETED"
    assert four.output == {"o1": "ok", "o2": "u", "o3": "one"}
