"""A workflow in Conductor's shape runs end to end on Kafka with data flowing between its
tasks: inputParameters resolved from the workflow input, earlier outputs, variables and the
run id; a fork/join whose branches both see the context; a JavaScript switch with a nested
value-param switch; SET_VARIABLE, JSON_JQ_TRANSFORM, INLINE and TERMINATE; retries from a
taskDefs file and an inline taskDefinition; the workflow's outputParameters."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamtask import Task
from streamtask.conductor.context import END, RunResult, run_result
from streamtask.kafka.topics import ensure
from streamtask.model.workflow import WorkflowApp, load_workflow
from streamtask.ops.check import check
from streamtask.ops.graph import mermaid
from tests.helpers import wait_until
from tests.workflow_helpers import running

HERE = Path(__file__).resolve().parent
DEFINITION = HERE / "workflows" / "shipping.json"
TASK_DEFS = HERE / "workflows" / "shipping_taskdefs.json"
ROOT = HERE.parent


class Recorder:
    """Handlers that record their inputs, and the finished runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inputs: dict[str, list[Any]] = {}
        self.finished: dict[str, RunResult] = {}

    def seen(self, name: str, task: Task) -> None:
        with self.lock:
            self.inputs.setdefault(name, []).append(task.payload)

    def prepare(self, task: Task) -> dict[str, Any]:
        self.seen("prepare", task)
        lines = task.payload["lines"]
        return {"total": sum(line["qty"] * line["price"] for line in lines),
                "skus": [line["sku"] for line in lines], "seenRun": task.payload["runId"]}

    def price_check(self, task: Task) -> dict[str, Any]:
        self.seen("price_check", task)
        if task.attempt == 1:
            raise ConnectionError("pricing service busy")  # retried per the taskDefs file
        return {"approved": task.payload["total"] < 100}

    def pack(self, task: Task) -> dict[str, Any]:
        self.seen("pack", task)
        return {"box": "small", "label": task.payload["label"]}

    def ground(self, task: Task) -> dict[str, Any]:
        self.seen("ground", task)
        return {"via": f"ground-{task.payload['box']}"}

    def on_end(self, task: Task) -> None:
        result = run_result(task)
        with self.lock:
            self.finished[result.workflow_id] = result

    def handlers(self) -> dict[str, Any]:
        return {"prepare": self.prepare, "price_check": self.price_check, "pack": self.pack,
                "ground": self.ground}


def build(recorder: Recorder, name: str, kafka: Any) -> WorkflowApp:
    return load_workflow(DEFINITION, recorder.handlers(), kafka=kafka.settings, name=name,
                         task_defs=TASK_DEFS, on_end=recorder.on_end)


def order(n: int, total_price: float, express: bool | None) -> dict[str, Any]:
    given = {"orderId": f"o{n}", "customer": {"name": f"cust{n}"},
             "lines": [{"sku": "mug", "qty": 2, "price": total_price / 4},
                       {"sku": "tea", "qty": 1, "price": total_price / 2}]}
    return given if express is None else {**given, "express": express}


def test_the_definition_passes_check_and_draws() -> None:
    app = load_workflow(DEFINITION, Recorder().handlers(), task_defs=TASK_DEFS)
    assert check(app) == []
    drawing = mermaid(app)
    for stage in ("prepare", "remember", "price_check", "pack", "summarise", "join", "route",
                  "carrier", "express_label", "ground", "stop", END):
        assert stage in drawing
    assert app.stages["price_check"].retry.retry_delays() == [1.0, 1.0]
    assert app.stages["price_check"].timeout == 20.0
    assert app.stages["pack"].retry.retry_delays() == [1.0]
    assert app.stages["prepare"].retry.max_attempts == 1
    assert app.stages["prepare"].concurrency == 4


@pytest.mark.timeout(180)
def test_runs_carry_data_between_tasks_and_end_with_their_outputs(kafka, unique) -> None:
    recorder = Recorder()
    app = build(recorder, f"t{unique}", kafka)
    ensure(app)
    express = app.start(order(1, 40.0, True))
    ground = app.start(order(2, 60.0, None))  # inputTemplate supplies express=false
    review = app.start(order(3, 400.0, False))
    runs = {express, ground, review}

    with running(app):
        wait_until(lambda: set(recorder.finished) >= runs, 120, "all three runs finished",
                   lambda: f"finished: {list(recorder.finished)}; inputs: {recorder.inputs}")

    done = recorder.finished
    assert done[express].status == "COMPLETED"
    assert done[express].output == {
        "total": 40.0, "label": "order o1 for cust1", "count": 2, "shipping": "ship",
        "customer": "cust1", "via": "small-express", "ground": None, "run": express}
    assert done[ground].status == "COMPLETED"
    assert done[ground].output["via"] is None
    assert done[ground].output["ground"] == "ground-small"
    assert done[review].status == "FAILED"
    assert done[review].reason == "total 400.0 needs review"
    assert done[review].output == {"total": 400.0}
    assert done[review].variables == {"customer": "cust3"}
    # every handler got exactly its resolved inputParameters (plus the taskDef's template)
    assert {"orderId": "o1", "lines": order(1, 40.0, True)["lines"], "runId": express,
            "currency": "EUR"} in recorder.inputs["prepare"]
    assert {"first": "mug", "label": "order o2 for cust2"} in recorder.inputs["pack"]
    assert len(recorder.inputs["price_check"]) == 6  # each run's first attempt failed once
    tasks = done[express].tasks
    assert tasks["price_check_ref"]["retryCount"] == 1
    assert tasks["join_ref"]["output"] == {
        "price_check_ref": {"approved": True},
        "summarise_ref": {"result": {"count": 2, "first": "mug"},
                          "resultList": [{"count": 2, "first": "mug"}]}}
    assert tasks["carrier_ref"]["output"] == {"evaluationResult": ["true"]}


def test_cli_workflow_start_prints_the_run_id_of_a_run_that_then_completes(
        kafka, unique, tmp_path: Path) -> None:
    definition = orjson.loads(DEFINITION.read_bytes())
    definition["name"] = f"cli{unique}"
    file = tmp_path / "shipping.json"
    file.write_bytes(orjson.dumps(definition))
    recorder = Recorder()
    app = load_workflow(file, recorder.handlers(), kafka=kafka.settings,
                        task_defs=TASK_DEFS, on_end=recorder.on_end)
    ensure(app)
    done = subprocess.run(
        [sys.executable, "-m", "streamtask", "workflow", "start", str(file), "--input",
         orjson.dumps(order(7, 20.0, True)).decode(), "--bootstrap", kafka.bootstrap],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", run_id), done.stdout
    with running(app):
        wait_until(lambda: run_id in recorder.finished, 120, "the run finished")
    assert recorder.finished[run_id].output["label"] == "order o7 for cust7"


@pytest.mark.parametrize(("args", "needle"), [
    (["--input", "[1]"], "--input must be a JSON object"),
    (["--input", "{"], "--input is not valid JSON"),
])
def test_cli_workflow_start_rejects_bad_input_in_one_line(args: list[str], needle: str) -> None:
    done = subprocess.run([sys.executable, "-m", "streamtask", "workflow", "start",
                           str(DEFINITION), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"]
    assert needle in done.stderr


@pytest.mark.parametrize(("output", "needle"), [
    ("[1]", "--output must be a JSON object"),
    ("{", "--output is not valid JSON"),
])
def test_cli_signal_rejects_bad_output_in_one_line(output: str, needle: str) -> None:
    done = subprocess.run([sys.executable, "-m", "streamtask", "signal", str(DEFINITION),
                           "run-1", "approval_ref", "--output", output], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"]
    assert needle in done.stderr
