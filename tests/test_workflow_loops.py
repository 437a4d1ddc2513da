"""DO_WHILE runs as a cycle of stages: Conductor's own loop fixture (a fork and join inside
the loop) goes round as often as its condition says, a polling loop stops when its task
says so, an items loop visits every item, and a loop past its limit is dead-lettered."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamtask import Task
from streamtask.conductor.loops import Loop
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import load_workflow
from streamtask.ops.check import WARNING, check
from streamtask.retry import DeadLetter
from tests.helpers import wait_until
from tests.workflow_helpers import Finished, running

FIXTURES = Path(__file__).resolve().parent / "data" / "conductor"


def counting(counter: Counter[str], lock: threading.Lock, name: str) -> Any:
    def handler(task: Task) -> dict[str, Any]:
        with lock:
            counter[name] += 1
        return {"ran": name}
    return handler


@pytest.mark.timeout(240)
def test_loops_run_as_often_as_their_condition_says(kafka, unique) -> None:
    counter: Counter[str] = Counter()
    lock = threading.Lock()
    finished = Finished()
    polls: Counter[str] = Counter()

    def check_status(task: Task) -> dict[str, Any]:
        with lock:
            polls[task.run_id] += 1
            count = polls[task.run_id]
        return {"state": "done" if count >= task.payload["after"] else "pending", "n": count}

    fixture = load_workflow(
        FIXTURES / "do_while_integration_test.json",
        {f"integration_task_{n}": counting(counter, lock, f"t{n}") for n in range(3)},
        kafka=kafka.settings, name=f"fx{unique}", on_end=finished.on_end)
    polling = load_workflow({
        "name": "polling", "tasks": [
            {"name": "poll", "taskReferenceName": "poll_ref", "type": "DO_WHILE",
             "inputParameters": {"limit": 10},
             "loopCondition": "$.check_ref.state != 'done' && $.poll_ref['iteration'] < $.limit",
             "loopOver": [{"name": "check_status", "taskReferenceName": "check_ref",
                           "inputParameters": {"after": "${workflow.input.after}"}}]},
            {"name": "each", "taskReferenceName": "each_ref", "type": "DO_WHILE",
             "items": "${workflow.input.items}",
             "loopOver": [{"name": "shout", "taskReferenceName": "shout_ref", "type": "LAMBDA",
                           "inputParameters": {"item": "${each_ref.output.loopItem}",
                                               "scriptExpression":
                                                   "return $.item.toUpperCase();"}}]}],
        "outputParameters": {"polls": "${poll_ref.output.iteration}",
                             "last": "${check_ref.output.n}",
                             "shouted": "${each_ref.output}"}},
        {"check_status": check_status}, kafka=kafka.settings, name=f"poll{unique}",
        on_end=finished.on_end)
    for app in (fixture, polling):
        assert [p for p in check(app) if not p.startswith(WARNING)] == []
        ensure(app)
    twice = fixture.start({"loop": 2})
    thrice = polling.start({"after": 3, "items": ["a", "b"]})
    once = polling.start({"after": 1, "items": ["z"]})
    with running(fixture), running(polling):
        wait_until(lambda: {twice, thrice, once} <= set(finished.runs), 180,
                   "every run finished", lambda: f"{finished.runs} {counter} {polls}")

    loop = finished.runs[twice].tasks["loopTask"]
    assert (loop["iteration"], loop["output"]["iteration"]) == (2, 2)
    assert loop["output"]["1"]["join"] == {"integration_task_1": {"ran": "t1"},
                                           "integration_task_2": {"ran": "t2"}}
    assert counter == {"t0": 2, "t1": 2, "t2": 2}
    out = finished.runs[thrice].output
    assert (out["polls"], out["last"]) == (3, 3)
    assert out["shouted"]["1"] == {"shout_ref": {"result": "A"}}
    assert out["shouted"]["2"] == {"shout_ref": {"result": "B"}}
    assert out["shouted"]["iteration"] == 2 and out["shouted"]["loopItem"] == "b"
    assert finished.runs[once].output["polls"] == 1


def test_a_loop_past_its_limit_is_dead_lettered_with_the_reason() -> None:
    loop = Loop("spin", "true", None, ("body",), limit=3)
    ctx: dict[str, Any] = {"workflow": {"input": {}}, "tasks": {
        "spin": {"output": {"iteration": 1}}, "body": {"output": {}}}}
    task = Task.new("spin_loop", ctx)
    assert loop.again(task, {}, ctx) and loop.again(task, {}, ctx)
    with pytest.raises(DeadLetter, match=r"DO_WHILE 'spin' would start pass 4, over its "
                       r"limit of 3"):
        loop.again(task, {}, ctx)


def test_keep_last_n_drops_older_passes() -> None:
    loop = Loop("l", "$.l.iteration < 5", None, ("b",))
    ctx: dict[str, Any] = {"workflow": {"input": {}}, "tasks": {
        "l": {"output": {"iteration": 1}}, "b": {"output": {"x": 1}}}}
    task = Task.new("l_loop", ctx)
    while loop.again(task, {"keepLastN": 2}, ctx):
        pass
    kept = {k for k in ctx["tasks"]["l"]["output"] if k.isdigit()}
    assert kept == {"4", "5"}
