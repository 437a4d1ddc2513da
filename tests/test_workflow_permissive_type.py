"""A task of type PERMISSIVE (Conductor's fixture) is a worker task with ``permissive``: its
failure past the last retry lets the run go on, and the run ends FAILED."""

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


def flaky(task: Task) -> dict[str, str]:
    if task.payload["p1"] == "fail":
        raise RuntimeError("always fails")
    return {"op": "first"}


@pytest.mark.timeout(240)
def test_a_permissive_failure_lets_the_run_go_on_and_fails_it_at_the_end(kafka,
                                                                         unique) -> None:
    finished = Finished()
    seen: list[object] = []

    def second(task: Task) -> dict[str, str]:
        seen.append(task.payload["tp2"])
        return {"uuid": "u"}

    app = load_workflow(FIXTURES / "simple_workflow_with_permissive_task_integration_test.json",
                        {"task_permissive": flaky, "integration_task_2": second},
                        kafka=kafka.settings, name=f"pm{unique}", on_end=finished.on_end)
    assert [p for p in check(app) if not p.startswith(WARNING)] == []
    ensure(app)
    failing = app.start({"param1": "fail"})
    passing = app.start({"param1": "ok"})
    with running(app):
        wait_until(lambda: {failing, passing} <= set(finished.runs), 180, "both runs ended",
                   lambda: str(finished.runs))
    bad = finished.runs[failing]
    assert bad.status == "FAILED" and "'t1'" in (bad.reason or "")
    assert bad.tasks["t1"]["status"] == "FAILED" and bad.tasks["t1"]["retryCount"] == 1
    assert bad.tasks["t2"]["status"] == "COMPLETED"  # the run went on past t1
    good = finished.runs[passing]
    assert good.status == "COMPLETED" and good.output["o3"] == "first"
    assert len(seen) == 2 and set(seen) == {"first", None}
