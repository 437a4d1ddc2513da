"""FORK_JOIN_DYNAMIC forks over a task list one task computes at run time: Conductor's own
dynamic fork fixture runs end to end, each forked task gets its own input, and the JOIN's
output maps each forked reference to its output."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from streamtask import Task
from streamtask.conductor.dynamic import tasks_of
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops.check import WARNING, check
from streamtask.retry import DeadLetter
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running

FIXTURE = Path(__file__).resolve().parent / "data" / "conductor" / \
    "dynamic_fork_join_integration_test.json"


@pytest.mark.timeout(240)
def test_conductors_dynamic_fork_fixture_runs_and_joins(kafka, unique) -> None:
    seen: dict[str, list[Any]] = {}
    lock = threading.Lock()
    finished = Finished()

    def record(name: str, output: Any) -> Any:
        def run(task: Task) -> Any:
            with lock:
                seen.setdefault(name, []).append(task.payload)
            return output(task) if callable(output) else output
        return run

    plan = {"dynamicTasks": [{"name": "integration_task_2", "taskReferenceName": "xdt1"},
                             {"name": "integration_task_3", "taskReferenceName": "xdt2"}],
            "dynamicTasksInput": {"xdt1": {"k1": "v1"}, "xdt2": {"k2": "${workflow.input.param2}"}}}
    handlers = {
        "integration_task_1": record("t1", plan),
        "integration_task_2": record("t2", lambda task: {"got": task.payload["k1"]}),
        "integration_task_3": record("t3", lambda task: {"got": task.payload["k2"]}),
        "integration_task_4": record("t4", {"done": True})}
    app = load_workflow(FIXTURE, handlers, kafka=kafka.settings, name=f"dy{unique}",
                        on_end=finished.on_end)
    assert [p for p in check(app) if not p.startswith(WARNING)] == []
    ensure(app)
    run = app.start({"param1": "p1", "param2": "p2"})
    with running(app):
        wait_until(lambda: run in finished.runs, 180, "the run finished", lambda: str(seen))
    result = finished.runs[run]
    assert result.status == "COMPLETED" and result.output == {"done": True}
    assert result.tasks["dynamicfanouttask_join"]["output"] == {
        "xdt1": {"got": "v1"}, "xdt2": {"got": "p2"}}
    assert seen["t2"] == [{"k1": "v1"}] and seen["t3"] == [{"k2": "p2"}]


def test_the_newer_form_forks_one_task_per_input() -> None:
    listed = tasks_of({"forkTaskName": "resize", "forkTaskInputs": [{"w": 1}, {"w": 2}]},
                      None, None)
    assert [(t["taskReferenceName"], t["input"]) for t in listed] == [
        ("_resize_0", {"w": 1}), ("_resize_1", {"w": 2})]


def test_a_bad_task_list_is_dead_lettered_with_the_reason() -> None:
    with pytest.raises(DeadLetter, match="must be a list of tasks with a taskReferenceName"):
        tasks_of({"dynamicTasks": "nope"}, "dynamicTasks", "dynamicTasksInput")
