"""A SUB_WORKFLOW whose name is an expression runs the child the run's input names, among
the workflows the app was loaded with; a name it does not know dead-letters the run at
``<task>_unknown`` with the names it knows. Against the broker, through load_workflow."""

from __future__ import annotations

from typing import Any

import pytest

from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops import deadletters as dlq
from streamtask.ops.check import WARNING, check
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running


def child(name: str) -> dict[str, Any]:
    return {"name": name, "tasks": [{"name": f"{name}_work", "taskReferenceName": "work",
                                     "inputParameters": {"x": "${workflow.input.x}"}}],
            "outputParameters": {"by": name, "x": "${work.output.x}"}}


@pytest.mark.timeout(240)
def test_the_input_names_the_child_that_runs(kafka, unique) -> None:
    finished = Finished()
    parent = {"name": "parent", "tasks": [
        {"name": "s", "taskReferenceName": "s", "type": "SUB_WORKFLOW",
         "inputParameters": {"x": "${workflow.input.x}"},
         "subWorkflowParam": {"name": "${workflow.input.child}"}},
        {"name": "after", "taskReferenceName": "after",
         "inputParameters": {"got": "${s.output.by}"}}]}
    handlers = {"alpha_work": lambda task: {"x": task.payload["x"] + 1},
                "beta_work": lambda task: {"x": task.payload["x"] * 10},
                "after": lambda task: task.payload}
    app = load_workflow(parent, handlers, kafka=kafka.settings, name=f"sn{unique}",
                        sub_workflows=[child("alpha"), child("beta"), parent],
                        on_end=finished.on_end)
    assert {"s", "s-0", "s-1", "s_unknown", "s_done"} <= set(app.stages)
    assert not any(name.startswith("s-2") for name in app.stages)  # parent: not a candidate
    assert [p for p in check(app) if not p.startswith(WARNING)] == []
    ensure(app)
    one = app.start({"child": "alpha", "x": 1})
    two = app.start({"child": "beta", "x": 2})
    unknown = app.start({"child": "gamma", "x": 3})

    def letters() -> dict[str, str]:
        return {letter.task.run_id: letter.record.message
                for letter in dlq.recent(app, [app.get_stage("s_unknown")], 10)
                if letter.task is not None}

    with running(app):
        wait_until(lambda: {one, two} <= set(finished.runs), 180, "the runs ended",
                   lambda: str(finished.runs))
        wait_until(lambda: unknown in letters(), 180, "the unknown name was dead-lettered")
    first, second = finished.runs[one], finished.runs[two]
    assert first.status == second.status == "COMPLETED"
    assert first.tasks["s"]["output"] == {"by": "alpha", "x": 2, "subWorkflowId": f"{one}/s"}
    assert second.tasks["s"]["output"]["x"] == 20
    assert first.tasks["after"]["output"] == {"got": "alpha"}
    assert set(first.tasks) == {"s", "after"}  # the choice leaves no record of its own
    assert ("SUB_WORKFLOW 's': workflow 'gamma' (from ${workflow.input.child}) is not one "
            "this app was loaded with; known: alpha, beta") in letters()[unknown]
    assert unknown not in finished.runs
