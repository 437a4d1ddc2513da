"""failureWorkflow runs when a run fails: after Conductor's own TERMINATE-FAILED fixture,
and after a task is dead-lettered; the run ends FAILED with the reason, and its output
carries the failure workflow's result."""

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


def charge(task: Task) -> None:
    raise DeadLetter(f"card of {task.payload['who']} declined")


@pytest.mark.timeout(240)
def test_the_failure_workflow_runs_after_terminate_and_after_a_dead_letter(kafka,
                                                                           unique) -> None:
    finished = Finished()
    terminated = load_workflow(FIXTURES / "terminate_task_failed_workflow_integration.json",
                               {"integration_task_2": lambda task: {}}, kafka=kafka.settings,
                               name=f"ft{unique}", sub_workflows=[FAILURE],
                               on_end=finished.on_end)
    declined = load_workflow(
        {"name": "pay", "failureWorkflow": "failure_workflow", "tasks": [
            {"name": "charge", "taskReferenceName": "charge_ref",
             "inputParameters": {"who": "${workflow.input.who}"}}]},
        {"charge": charge}, kafka=kafka.settings, name=f"fd{unique}", sub_workflows=[FAILURE],
        on_end=finished.on_end)
    for app in (terminated, declined):
        assert [p for p in check(app) if not p.startswith(WARNING)] == []
        ensure(app)
    first = terminated.start({"a": 1})
    second = declined.start({"a": 2, "who": "ann"})
    with running(terminated), running(declined):
        wait_until(lambda: {first, second} <= set(finished.runs), 180, "both runs ended",
                   lambda: str(finished.runs))
    one = finished.runs[first]
    assert one.status == "FAILED"
    assert one.output == {"result": {"testvalue": True}, "conductor.failure_workflow": {
        "status": "COMPLETED", "output": {"result": {"testvalue": True}}}}
    two = finished.runs[second]
    assert two.status == "FAILED" and "card of ann declined" in (two.reason or "")
    assert two.output["conductor.failure_workflow"] == {
        "status": "COMPLETED", "output": {"result": {"testvalue": False}}}
