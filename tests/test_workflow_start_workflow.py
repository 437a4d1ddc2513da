"""START_WORKFLOW (Conductor's fixture, the name given by the run's input) starts a new run
of a workflow the app was loaded with, under that workflow's own app, and completes at once
with its ``workflowId``; a name the app does not know dead-letters the task, the reason
naming the names it knows."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtask.errors import ConfigurationError
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops.check import WARNING, check
from tests.helpers import wait_until
from tests.topic_reader import read_to_end
from tests.workflow_helpers import Finished, running

FIXTURES = Path(__file__).resolve().parent / "data" / "conductor"


@pytest.mark.timeout(240)
def test_start_workflow_starts_a_run_of_a_known_definition(kafka, unique) -> None:
    child_name = f"child{unique}"
    child = {"name": child_name, "tasks": [
        {"name": "greet", "taskReferenceName": "greet_ref",
         "inputParameters": {"who": "${workflow.input.who}"}}],
        "outputParameters": {"said": "${greet_ref.output.said}"}}
    finished = Finished()
    parent = load_workflow(FIXTURES / "workflow_that_starts_another_workflow.json", {},
                           kafka=kafka.settings, name=f"sw{unique}", sub_workflows=[child],
                           on_end=finished.on_end)
    started = load_workflow(child, {"greet": lambda task: {"said": f"hi {task.payload['who']}"}},
                            kafka=kafka.settings, on_end=finished.on_end)
    assert started.name == child_name  # the app START_WORKFLOW sends to
    for app in (parent, started):
        assert [p for p in check(app) if not p.startswith(WARNING)] == []
        ensure(app)
    good = parent.start({"startWorkflow": {"name": child_name, "input": {"who": "ann"},
                                           "correlationId": "c-1"}})
    bad = parent.start({"startWorkflow": {"name": "nobody", "input": {}}})
    dlq = parent.get_stage("start_workflow").dlq_topic

    def reasons() -> list[str]:
        return [" ".join(value.decode(errors="replace") for _, value in r.headers() or []
                         if value)
                for r in read_to_end(kafka.bootstrap, dlq)]

    with running(parent), running(started):
        wait_until(lambda: good in finished.runs, 180, "the parent run ended",
                   lambda: str(finished.runs))
        wait_until(lambda: bool(reasons()), 180, "the unknown name was dead-lettered")
        child_id = finished.runs[good].tasks["st"]["output"]["workflowId"]
        wait_until(lambda: child_id in finished.runs, 180, "the started run ended",
                   lambda: str(finished.runs))
    assert finished.runs[good].status == "COMPLETED"
    assert finished.runs[good].output == {"workflowId": child_id}
    assert child_id != good
    assert finished.runs[child_id].status == "COMPLETED"
    assert finished.runs[child_id].output == {"said": "hi ann"}
    assert bad not in finished.runs
    [reason] = reasons()
    assert "workflow 'nobody' is not one this app was loaded with" in reason
    assert child_name in reason


def test_a_literal_unknown_name_is_reported_at_load() -> None:
    definition = {"name": "p", "tasks": [
        {"name": "s", "taskReferenceName": "s_ref", "type": "START_WORKFLOW",
         "inputParameters": {"startWorkflow": {"name": "ghost"}}}]}
    with pytest.raises(ConfigurationError, match="workflow 'ghost' is not given to the loader"):
        load_workflow(definition, {})
