"""Conductor's ${...} expressions resolve as its ParametersUtils does; steps record outputs,
tolerate failures of optional tasks only past their last retry, and refuse to grow a run's
context past its bound. No Kafka involved."""

from __future__ import annotations

from typing import Any

import pytest

from streamtask import Task
from streamtask.conductor.context import Step, Workflow, run_result
from streamtask.conductor.expressions import resolve
from streamtask.retry import DeadLetter, RetryPolicy

DOC: dict[str, Any] = {
    "workflow": {"input": {"id": 7, "name": "ann", "key": "b", "tags": ["x", "y"],
                           "odd-key": 1, "nothing": None},
                 "variables": {"v": {"deep": True}}, "workflowId": "run-1"},
    "t1": {"output": {"a": {"b": [10, 20]}, "list": [{"n": 1}, {"n": 2}]}},
}


@pytest.mark.parametrize(("template", "expected"), [
    ("${workflow.input.id}", 7),  # a whole expression keeps its type
    ("${workflow.input}", DOC["workflow"]["input"]),
    ("${t1.output.a.b[0]}", 10),
    ("${t1.output.a.b[-1]}", 20),
    ("${t1.output.list[*].n}", [1, 2]),
    ("${$.t1.output.a.b[1]}", 20),
    ("${workflow.input['odd-key']}", 1),
    ("${workflow.variables.v.deep}", True),
    ("${workflow.workflowId}", "run-1"),
    ("${t1.output.${workflow.input.key}}", None),  # t1.output.b does not exist
    ("${t1.output.a.${workflow.input.key}[1]}", 20),  # inner first
    ("id=${workflow.input.id}, name=${workflow.input.name}", "id=7, name=ann"),
    ("${workflow.input.nothing}-${missing.output.x}", "null-null"),
    ("${workflow.input.tags} ok", '["x","y"] ok'),
    ("${no.such.path}", None),
    ("${}", ""),
    ("$${workflow.input.id}", "${workflow.input.id}"),  # escaped
    ("${CPEWF_TASK_ID}", "task-9"),
    ("workflow.input.id", "workflow.input.id"),  # no braces: a literal
    ({"nested": ["${workflow.input.id}", {"deeper": "${t1.output.a}"}], "n": 3, "f": None},
     {"nested": [7, {"deeper": {"b": [10, 20]}}], "n": 3, "f": None}),
])
def test_expressions(template: Any, expected: Any) -> None:
    assert resolve(template, DOC, "task-9") == expected


def test_no_environment_variable_leaks_through_an_expression(monkeypatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    assert resolve("${SECRET_TOKEN}", DOC) is None


WF = Workflow("wf", 1, output_parameters={"sum": "${add.output.sum}"},
              input_template={"b": 100})


def first_task(payload: Any, attempt: int = 1) -> Task:
    return Task.new("add", payload, id="t-1").with_(attempt=attempt)


def add(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
    return {"sum": inputs["a"] + inputs["b"]}


def test_a_step_records_its_output_and_the_end_step_the_workflow_output() -> None:
    step = Step(WF, "add", "SIMPLE", {"a": "${workflow.input.a}", "b": "${workflow.input.b}"},
                ends=True)
    ctx = step.run(first_task(WF.new_context({"a": 1})), add)
    assert ctx["tasks"]["add"]["input"] == {"a": 1, "b": 100}  # inputTemplate filled b
    assert ctx["tasks"]["add"]["output"] == {"sum": 101}
    result = run_result(first_task(ctx))
    assert (result.status, result.output) == ("COMPLETED", {"sum": 101})


def test_a_plain_payload_sent_to_the_first_stage_is_the_workflow_input() -> None:
    step = Step(WF, "add", "SIMPLE", {"a": "${workflow.input.a}", "b": 2})
    assert step.run(first_task({"a": 5}), add)["tasks"]["add"]["output"] == {"sum": 7}


def boom(task: Task, inputs: Any, ctx: dict[str, Any]) -> Any:
    raise ConnectionError("down")


@pytest.mark.parametrize(("tolerate", "attempt", "status"), [
    (None, 2, None), ("optional", 1, None), ("optional", 2, "COMPLETED_WITH_ERRORS"),
    ("permissive", 2, "FAILED")])
def test_optional_and_permissive_tasks_go_on_only_past_their_last_retry(
        tolerate: str | None, attempt: int, status: str | None) -> None:
    step = Step(WF, "add", "SIMPLE", {}, tolerate=tolerate,
                retry=RetryPolicy(max_attempts=2, delay=1), ends=True)
    task = first_task(WF.new_context({"a": 1}), attempt)
    if status is None:
        with pytest.raises(ConnectionError):
            step.run(task, boom)
        return
    ctx = step.run(task, boom)
    assert ctx["tasks"]["add"]["status"] == status
    assert "ConnectionError: down" in ctx["tasks"]["add"]["reasonForIncompletion"]
    assert ctx["workflow"]["status"] == ("COMPLETED" if tolerate == "optional" else "FAILED")


def test_a_context_past_its_bound_is_dead_lettered_with_a_clear_reason() -> None:
    small = Workflow("wf", context_limit=2_000)
    step = Step(small, "big", "SIMPLE", {})
    with pytest.raises(DeadLetter, match=r"context would be \d+ bytes after 'big', over the "
                       r"limit of 2000"):
        step.run(first_task(small.new_context({"a": 1})),
                 lambda task, inputs, ctx: {"blob": "x" * 5_000})
    assert step.run(first_task(small.new_context({"a": 1})),
                    lambda task, inputs, ctx: {"blob": "x" * 100})
