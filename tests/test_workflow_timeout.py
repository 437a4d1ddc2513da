"""A workflow's ``timeoutSeconds``, against the broker: under TIME_OUT_WF a run past the
bound ends TIMED_OUT at its next task (which does not run) and its failureWorkflow runs;
under ALERT_ONLY it is logged once and the run completes."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from streamtask.errors import ConfigurationError
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running


def slow(task: Any) -> dict[str, Any]:
    time.sleep(3)  # longer than the workflow's bound of 2 s, however fast the rest runs
    return {"slept": 3}


def definition(policy: str) -> dict[str, Any]:
    return {"name": "bounded", "timeoutSeconds": 2, "timeoutPolicy": policy,
            "tasks": [{"name": "slow", "taskReferenceName": "slow"},
                      {"name": "after", "taskReferenceName": "after"}]}


@pytest.mark.timeout(240)
def test_time_out_wf_ends_the_run_timed_out_and_runs_its_failure_workflow(kafka,
                                                                          unique) -> None:
    finished, cleaned = Finished(), []
    cleanup = {"name": "cleanup", "tasks": [{"name": "clean", "taskReferenceName": "clean",
                                             "inputParameters": {
                                                 "status": "${workflow.input.failureStatus}",
                                                 "reason": "${workflow.input.reason}"}}]}
    app = load_workflow({**definition("TIME_OUT_WF"), "failureWorkflow": "cleanup"},
                        {"slow": slow, "after": lambda task: {"ran": True},
                         "clean": lambda task: cleaned.append(task.payload) or task.payload},
                        kafka=kafka.settings, name=f"to{unique}", sub_workflows=[cleanup],
                        on_end=finished.on_end)
    ensure(app)
    run = app.start({"k": 1})
    with running(app):
        wait_until(lambda: run in finished.runs, 180, "the run ended", lambda: str(finished.runs))
    result = finished.runs[run]
    assert result.status == "TIMED_OUT"
    assert result.reason == "workflow timed out after 2s (timeoutSeconds)"
    # the bound counts from the start: on a slow machine it may pass before 'slow' runs
    assert result.tasks.get("slow", {}).get("status", "COMPLETED") == "COMPLETED"
    assert "after" not in result.tasks  # the task past the bound never ran
    assert cleaned == [{"status": "TIMED_OUT",
                        "reason": "workflow timed out after 2s (timeoutSeconds)"}]
    assert result.output["conductor.failure_workflow"]["status"] == "COMPLETED"


@pytest.mark.timeout(240)
def test_alert_only_logs_once_and_the_run_completes(kafka, unique,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    finished = Finished()
    app = load_workflow(definition("ALERT_ONLY"),
                        {"slow": slow, "after": lambda task: {"ran": True}},
                        kafka=kafka.settings, name=f"ta{unique}", on_end=finished.on_end)
    ensure(app)
    run = app.start({})
    with caplog.at_level(logging.WARNING, logger="streamtask.workflow"), running(app):
        wait_until(lambda: run in finished.runs, 180, "the run ended", lambda: str(finished.runs))
    assert finished.runs[run].status == "COMPLETED"
    assert finished.runs[run].tasks["after"]["output"] == {"ran": True}
    alerts = [r for r in caplog.records if getattr(r, "event", "") == "workflow.timed_out"
              and r.fields["run_id"] == run]  # type: ignore[attr-defined]
    assert len(alerts) == 1  # once, at the first task past the bound ('after', or 'slow'
    # when the workers took longer than the bound to start)


@pytest.mark.parametrize(("options", "needle"), [
    ({"timeoutSeconds": -1}, "timeoutSeconds must be a number >= 0, not -1"),
    ({"timeoutSeconds": 5, "timeoutPolicy": "RETRY"}, "timeoutPolicy 'RETRY' is not one of"),
])
def test_bad_workflow_timeouts_are_refused_at_load(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        load_workflow({**definition("TIME_OUT_WF"), **options}, {"slow": slow, "after": slow})


def test_a_sub_workflows_own_timeout_is_refused_unless_ignored() -> None:
    child = {"name": "c", "timeoutSeconds": 60, "tasks": [{"name": "x", "taskReferenceName": "x"}]}
    parent = {"name": "p", "tasks": [{"name": "s", "taskReferenceName": "s",
                                      "type": "SUB_WORKFLOW", "subWorkflowParam": {"name": "c"}}]}
    with pytest.raises(ConfigurationError, match=r"SUB_WORKFLOW 's' .* timeoutSeconds"):
        load_workflow(parent, {"x": dict}, sub_workflows=[child])
    app = load_workflow(parent, {"x": dict}, sub_workflows=[child], ignore=["timeoutSeconds"])
    assert "s__x" in app.stages
