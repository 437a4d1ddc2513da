"""A SWITCH with ``evaluatorType: decision`` has the legacy DECISION semantics: the case is
the input parameter ``expression`` (or ``caseValueParam``) names, and a matched case with no
tasks falls back to the default case."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtask import Task
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops.check import WARNING, check
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running

FIXTURES = Path(__file__).resolve().parent / "data" / "conductor"
ROUTED = {
    "name": "routed", "tasks": [
        {"name": "decide", "taskReferenceName": "decide", "type": "SWITCH",
         "evaluatorType": "decision", "expression": "route",
         "inputParameters": {"route": "${workflow.input.route}"},
         "decisionCases": {"billing": [{"name": "bill", "taskReferenceName": "bill"}],
                           "nothing": []},
         "defaultCase": [{"name": "other", "taskReferenceName": "other"}]}]}


def done(task: Task) -> dict[str, bool]:
    return {"done": True}


@pytest.mark.timeout(240)
def test_the_decision_evaluator_routes_by_the_named_parameter(kafka, unique) -> None:
    finished = Finished()
    routed = load_workflow(ROUTED, {"bill": done, "other": done}, kafka=kafka.settings,
                           name=f"dr{unique}", on_end=finished.on_end)
    fixture = load_workflow(FIXTURES / "decision_switch_integration_test.json",
                            {"integration_task_1": done}, kafka=kafka.settings,
                            name=f"df{unique}", on_end=finished.on_end)
    for app in (routed, fixture):
        assert [p for p in check(app) if not p.startswith(WARNING)] == []
        ensure(app)
    runs = {routed.start({"route": route}): route for route in ("billing", "nothing", "xyz")}
    unrouted = fixture.start({"a": 1})
    with running(routed), running(fixture):
        wait_until(lambda: {*runs, unrouted} <= set(finished.runs), 180, "every run ended",
                   lambda: str(finished.runs))
    ran = {runs[run]: {ref for ref in finished.runs[run].tasks if ref != "decide"}
           for run in runs}
    assert ran == {"billing": {"bill"}, "nothing": {"other"}, "xyz": {"other"}}
    assert all(finished.runs[run].status == "COMPLETED" for run in runs)
    # the fixture's input has no 'route': no case, no default: the run carries on and ends
    assert finished.runs[unrouted].status == "COMPLETED"
    assert "billing_branch" not in finished.runs[unrouted].tasks
