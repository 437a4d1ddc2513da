"""An ``asyncComplete`` task runs, then holds its run until a signal completes it (from the
CLI or from Python, before or after the run gets there); its output is its own merged with
the signal's, as Conductor merges an external update. A FAILED signal dead-letters the run
with its reason. Against the broker, through load_workflow and ``streamtask signal``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamtask.errors import ConfigurationError
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops import deadletters as dlq
from streamtask.ops.check import WARNING, check
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running

ROOT = Path(__file__).resolve().parent.parent


def definition(name: str) -> dict[str, Any]:
    return {"name": name, "tasks": [
        {"name": "charge", "taskReferenceName": "charge", "asyncComplete": True,
         "inputParameters": {"amount": "${workflow.input.amount}"}},
        {"name": "ship", "taskReferenceName": "ship",
         "inputParameters": {"receipt": "${charge.output.receipt}",
                             "charge_id": "${charge.output.charge_id}"}}]}


@pytest.mark.timeout(300)
def test_an_async_complete_task_waits_for_its_signal(kafka, unique, tmp_path: Path) -> None:
    finished = Finished()
    name = f"ac{unique}"
    app = load_workflow(definition(name),
                        {"charge": lambda task: {"charge_id": f"c-{task.payload['amount']}"},
                         "ship": lambda task: task.payload},
                        kafka=kafka.settings, on_end=finished.on_end)
    assert app.signals == {"charge": "charge_signal"}
    assert [p for p in check(app) if not p.startswith(WARNING)] == []
    file = tmp_path / "flow.json"
    file.write_bytes(orjson.dumps(definition(name)))
    ensure(app)
    later, early, declined = app.start({"amount": 5}), app.start({"amount": 7}), \
        app.start({"amount": 9})
    app.signal(early, "charge", {"receipt": "r-early"})  # before the task ran: it waits
    with running(app):
        app.signal(declined, "charge", status="FAILED", reason="card declined")
        done = subprocess.run(
            [sys.executable, "-m", "streamtask", "signal", str(file), later, "charge",
             "--output", '{"receipt": "r-later"}', "--bootstrap", kafka.bootstrap],
            cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
            check=False)
        assert (done.returncode, done.stdout) == (0, f"signalled charge of run {later}\n"), \
            done.stderr

        def letters() -> dict[str, str]:
            return {letter.task.run_id: letter.record.message
                    for letter in dlq.recent(app, [app.get_stage("charge_resume")], 10)
                    if letter.task is not None}

        wait_until(lambda: {later, early} <= set(finished.runs), 180, "the runs ended",
                   lambda: str(finished.runs))
        wait_until(lambda: declined in letters(), 180, "the declined run was dead-lettered")
    first = finished.runs[later]
    assert first.status == "COMPLETED"
    assert first.tasks["charge"]["output"] == {"charge_id": "c-5", "receipt": "r-later"}
    assert first.tasks["ship"]["output"] == {"receipt": "r-later", "charge_id": "c-5"}
    assert finished.runs[early].tasks["ship"]["output"]["receipt"] == "r-early"
    assert "'charge' was signalled FAILED: card declined" in letters()[declined]
    assert declined not in finished.runs


def test_async_complete_where_it_cannot_be_signalled_is_refused() -> None:
    inside = {"name": "w", "tasks": [{"name": "f", "taskReferenceName": "f",
                                      "type": "FORK_JOIN", "forkTasks": [
        [{"name": "a", "taskReferenceName": "a", "asyncComplete": True}],
        [{"name": "b", "taskReferenceName": "b"}]]}]}
    with pytest.raises(ConfigurationError, match="asyncComplete task inside a FORK_JOIN"):
        load_workflow(inside, {"a": dict, "b": dict})
    with pytest.raises(ConfigurationError, match="asyncComplete must be true or false"):
        load_workflow({"name": "w", "tasks": [{"name": "a", "taskReferenceName": "a",
                                               "asyncComplete": "yes"}]}, {"a": dict})
