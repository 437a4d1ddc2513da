"""SUB_WORKFLOW runs the child's tasks in a frame of their own: Conductor's inline-definition
fixture passes data into and out of its child, a child named in the loader's registry runs
inside a fork branch, and a child that waits for a signal resumes the parent."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from streamtask import Task
from streamtask.errors import ConfigurationError
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops.check import WARNING, check
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running

FIXTURES = Path(__file__).resolve().parent / "data" / "conductor"


@pytest.mark.timeout(300)
def test_children_take_input_give_output_and_can_wait(kafka, unique) -> None:
    seen: dict[str, list[Any]] = {}
    lock = threading.Lock()
    finished = Finished()

    def handler(name: str, output: dict[str, Any]) -> Any:
        def run(task: Task) -> dict[str, Any]:
            with lock:
                seen.setdefault(name, []).append(task.payload)
            return output
        return run

    handlers = {
        "integration_task_1": handler("t1", {"op": "one", "imageType": "png"}),
        "integration_task_2": handler("t2", {"op": "two"}),
        "integration_task_3": handler("t3", {"op": "three"}),
        "simple_task_in_sub_wf": handler("child", {"from": "child"})}
    registry = [FIXTURES / "simple_one_task_sub_workflow_integration_test.json",
                FIXTURES / "signal_sub_wf_child_integration_test.json"]
    apps = [load_workflow(FIXTURES / name, handlers, kafka=kafka.settings,
                          name=f"s{n}{unique}", sub_workflows=registry, on_end=finished.on_end)
            for n, name in enumerate([
                "simple_workflow_with_sub_workflow_inline_def_integration_test.json",
                "fork_join_sub_workflow.json", "signal_sub_wf_parent_integration_test.json"])]
    inline, forked, waiting = apps
    for app in apps:
        assert [p for p in check(app) if not p.startswith(WARNING)] == []
        ensure(app)
    first = inline.start({"param1": "p1", "param2": "p2"})
    second = forked.start({"param1": "a", "param2": "b"})
    third = waiting.start({"x": 1})
    with running(inline), running(forked), running(waiting):
        wait_until(lambda: {first, second} <= set(finished.runs), 180, "two runs finished",
                   lambda: f"{finished.runs} {seen}")
        waiting.signal(third, "wait_in_sub_ref", {"signalled": True})
        wait_until(lambda: third in finished.runs, 120, "the waiting child resumed")

    one = finished.runs[first]
    assert one.status == "COMPLETED" and one.output == {"o3": "one"}
    assert seen["t3"] == [{"p1": "png"}]  # the child's ${workflow.input} is the task's input
    assert one.tasks["swt"]["output"] == {"op": "three", "subWorkflowId": f"{first}/swt"}
    assert "t3" not in one.tasks  # the child's tasks stay in its frame
    assert {"op": "one"} in seen["t2"]  # the forked run also runs t2, in either order
    two = finished.runs[second]
    assert two.tasks["fanouttask_join"]["output"]["st1"]["from"] == "child"
    three = finished.runs[third]
    assert three.tasks["sub_wf_ref"]["output"]["signalled"] is True


def test_a_missing_or_dynamic_or_recursive_child_is_reported() -> None:
    def parent(param: dict[str, Any]) -> dict[str, Any]:
        return {"name": "parent", "tasks": [{"name": "s", "taskReferenceName": "s",
                                            "type": "SUB_WORKFLOW", "subWorkflowParam": param}]}
    for param, needle in [({"name": "nowhere"}, "neither inline"),
                          ({"name": "${workflow.input.child}"},
                           "and no workflow given to the loader"),
                          ({"name": "parent"}, "would contain itself")]:
        with pytest.raises(ConfigurationError, match=needle):
            load_workflow(parent(param), {}, sub_workflows=[parent({"name": "parent"})])
