"""Conductor workflow definitions map onto stages, forks, joins and switches; anything that
cannot be honoured is reported, all of it in one error, never dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamtask import ConfigurationError
from streamtask.conductor.context import END
from streamtask.model.pipeline import JoinSpec, Switch
from streamtask.model.workflow import load_workflow, passthrough, passthrough_handlers
from streamtask.retry import Backoff

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "order_fulfillment.json"


def simple(name: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": f"{name}_ref", "type": "SIMPLE", **options}


def switch(name: str, cases: dict[str, list[Any]], default: list[Any] | None = None,
           source: str = "${workflow.input.kind}") -> dict[str, Any]:
    task = {"name": name, "taskReferenceName": f"{name}_ref", "type": "SWITCH",
            "evaluatorType": "value-param", "expression": "which",
            "inputParameters": {"which": source}, "decisionCases": cases}
    return {**task, "defaultCase": default} if default is not None else task


def fork(name: str, *branches: list[Any]) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": f"{name}_ref", "type": "FORK_JOIN",
            "forkTasks": list(branches)}


def load(*tasks: Any, **kwargs: Any) -> Any:
    definition = {"name": "wf", "version": 2, "tasks": list(tasks)}
    return load_workflow(definition, passthrough_handlers(definition), **kwargs)


def thens(app: Any) -> dict[str, Any]:
    """Each stage's then, the end stage left out (None where a run ends)."""
    return {name: None if stage.then == END else stage.then
            for name, stage in app.stages.items() if name != END}


def routes(then: Any) -> tuple[dict[Any, str], str | None]:
    """A switch's cases and default."""
    assert isinstance(then, Switch), then
    return dict(then.cases), then.default


def test_the_order_fulfillment_example_maps_onto_a_chain_a_fork_and_a_join() -> None:
    app = load_workflow(EXAMPLE, passthrough_handlers(EXAMPLE))
    assert app.name == "order_fulfillment_workflow" and app.version == 1
    assert thens(app) == {
        "validate_order": "process_payment",
        "process_payment": "update_inventory",
        "update_inventory": ("send_email", "send_sms"),
        "send_email": "send_notification_join",
        "send_sms": "send_notification_join",
        "send_notification_join": None,
    }
    join = app.stages["send_notification_join"]
    assert join.join == JoinSpec(("send_email", "send_sms"))
    payment = app.stages["process_payment"].retry
    assert (payment.max_attempts, payment.backoff, payment.retry_delays()) == \
        (4, Backoff.FIXED, [60.0, 60.0, 60.0])
    assert {s.partitions for s in app.stages.values()} == {3}
    assert app.stages["validate_order"].timeout == 300.0


def test_the_json_may_be_a_path_a_string_of_json_or_a_mapping() -> None:
    text = EXAMPLE.read_text()
    for definition in (EXAMPLE, str(EXAMPLE), text, json.loads(text)):
        app = load_workflow(definition, passthrough_handlers(definition))
        assert next(iter(app.stages)) == "validate_order"


def test_name_is_sanitised_or_overridden_and_partitions_apply_to_every_stage() -> None:
    definition = {"name": "Orders v2.1 (EU)", "tasks": [simple("a")]}
    assert load_workflow(definition, {"a": passthrough}).name == "Orders_v2_1__EU_"
    app = load_workflow(definition, {"a": passthrough}, name="tabc", partitions=5)
    assert app.name == "tabc" and app.stages["a"].partitions == 5
    assert app.stages["a"].topic == "tabc.a"


def test_retry_and_timeout_options() -> None:
    app = load(simple("exp", retryCount=4, retryLogic="EXPONENTIAL_BACKOFF",
                      retryDelaySeconds=2),
               simple("lin", retryLogic="LINEAR_BACKOFF", retryDelaySeconds=5,
                      timeoutSeconds=30),
               simple("once", retryCount=0, timeoutSeconds=0))
    assert app.stages["exp"].retry.retry_delays() == [2.0, 4.0, 8.0, 16.0]
    assert app.stages["lin"].retry.retry_delays() == [5.0, 10.0, 15.0]
    assert app.stages["lin"].timeout == 30.0
    assert app.stages["once"].retry.max_attempts == 1 and app.stages["once"].retry.ladder() == []
    assert app.stages["once"].timeout is None  # Conductor's 0: no limit


def test_task_defaults_fill_in_what_tasks_leave_out() -> None:
    app = load(simple("a"), simple("b", retryDelaySeconds=7),
               task_defaults={"retryDelaySeconds": 1, "timeoutSeconds": 9})
    assert app.stages["a"].retry.retry_delays() == [1.0, 1.0, 1.0]
    assert app.stages["b"].retry.retry_delays() == [7.0, 7.0, 7.0]
    assert app.stages["a"].timeout == 9.0
    with pytest.raises(ConfigurationError, match="task_defaults: unknown option"):
        load(simple("a"), task_defaults={"optional": True})


def test_explicit_join_takes_its_name_and_the_task_after_it() -> None:
    app = load(simple("start"),
               fork("split", [simple("a1"), simple("a2")], [simple("b1")]),
               {"name": "meet", "taskReferenceName": "meet_ref", "type": "JOIN",
                "joinOn": ["a2_ref", "b1_ref"], "timeoutSeconds": 45},
               simple("end"))
    assert thens(app) == {"start": ("a1", "b1"), "a1": "a2", "a2": "meet", "b1": "meet",
                          "meet": "end", "end": None}
    assert app.stages["meet"].join == JoinSpec(("a2", "b1"), timeout=45.0)
    assert "split_join" not in app.stages


def test_nested_fork_ends_its_branch_with_its_join() -> None:
    app = load(simple("start"),
               fork("outer", [fork("inner", [simple("x")], [simple("y")])], [simple("z")]))
    assert thens(app) == {"start": ("inner", "z"), "inner": ("x", "y"), "x": "inner_join",
                          "y": "inner_join", "inner_join": "outer_join", "z": "outer_join",
                          "outer_join": None}
    assert app.stages["outer_join"].join == JoinSpec(("inner_join", "z"))


def test_a_branch_ending_in_a_switch_gathers_its_cases_before_the_join() -> None:
    app = load(simple("a"), fork("f", [simple("b")], [simple("c"), switch("s", {
        "x": [simple("d")]}, default=[simple("e")])]))
    assert thens(app)["d"] == thens(app)["e"] == "s_end"
    assert thens(app)["s_end"] == "f_join"
    assert app.stages["f_join"].join == JoinSpec(("b", "s_end"))


def test_tasks_without_a_name_are_named_by_their_reference() -> None:
    app = load(simple("a"), fork("f", [simple("b")], [simple("c")]),
               {"taskReferenceName": "meet", "type": "JOIN"})
    assert "meet" in app.stages


def test_switch_routes_on_one_field_and_every_case_continues_after_it() -> None:
    app = load(simple("classify"),
               switch("route", {"photo": [simple("resize"), simple("thumb")],
                                "video": [simple("transcode")], "text": []},
                      default=[simple("store_raw")], source="${classify_ref.output.kind}"),
               simple("publish"))
    assert routes(app.stages["classify"].then) == (
        {"photo": "resize", "video": "transcode", "text": "publish"}, "store_raw")
    assert thens(app) | {"classify": None} == {
        "classify": None, "resize": "thumb", "thumb": "publish", "transcode": "publish",
        "store_raw": "publish", "publish": None}
    assert "route" not in app.stages  # the stage before the switch carries it


def test_switch_without_default_carries_on_with_the_next_task() -> None:
    app = load(simple("a"), switch("s", {"x": [simple("bx")]}), simple("after"))
    assert routes(app.stages["a"].then) == ({"x": "bx"}, "after")


def test_legacy_decision_is_a_switch_too() -> None:
    decision = {"name": "d", "taskReferenceName": "d_ref", "type": "DECISION",
                "caseValueParam": "p", "inputParameters": {"p": "${workflow.input.tier}"},
                "decisionCases": {"gold": [simple("vip")]}, "defaultCase": [simple("std")]}
    app = load(simple("a"), decision)
    assert routes(app.stages["a"].then) == ({"gold": "vip"}, "std")


def test_a_switch_or_fork_with_no_stage_in_front_gets_a_routing_stage() -> None:
    app = load(switch("route", {"a": [simple("x")]}, default=[simple("y")]))
    assert next(iter(app.stages)) == "route" and app.entry == "route"
    assert routes(app.stages["route"].then) == ({"a": "x"}, "y")
    app = load(fork("split", [simple("a")], [simple("b")]),
               switch("after_join", {"k": [simple("c")]}))
    assert app.stages["split"].then == ("a", "b")
    assert app.stages["split_join"].then == "after_join"  # a join cannot carry a switch
    assert routes(app.stages["after_join"].then) == ({"k": "c"}, END)


def test_stages_are_declared_in_the_definitions_order() -> None:
    app = load(simple("a"), fork("f", [simple("b"), simple("c")], [simple("d")]),
               switch("s", {"x": [simple("e")]}, default=[simple("g")]), simple("h"))
    assert list(app.stages) == ["a", "b", "c", "d", "f_join", "s", "e", "g", "h", END]


def test_every_unsupported_task_is_listed_in_one_error() -> None:
    tasks = [
        simple("a"),
        {"name": "loop", "taskReferenceName": "loop_ref", "type": "DO_WHILE",
         "loopCondition": "false", "loopOver": [simple("inside"), {
             "name": "deep", "taskReferenceName": "deep_ref", "type": "KAFKA_PUBLISH"}]},
        fork("f", [{"name": "call", "taskReferenceName": "call_ref", "type": "HTTP"},
                   {"name": "wait", "taskReferenceName": "wait_ref", "type": "GRAPHQL"}],
             [simple("b")]),
        switch("s", {"x": [{"name": "pause", "taskReferenceName": "pause_ref",
                            "type": "NOOP"}]}),
        {"name": "child", "taskReferenceName": "child_ref", "type": "BUSINESS_RULE"},
    ]
    with pytest.raises(ConfigurationError) as caught:
        load(*tasks)
    message = str(caught.value)
    assert "\n" not in message
    for name, kind in [("deep", "KAFKA_PUBLISH"), ("wait", "GRAPHQL"),
                       ("pause", "NOOP"), ("child", "BUSINESS_RULE")]:
        assert f"'{name}' (ref '{name}_ref') ({kind})" in message
    assert message.index("deep") < message.index("wait") < message.index("child")


def test_unknown_options_are_reported_unless_off_or_ignored() -> None:
    definition = {"name": "w", "failureWorkflow": "cleanup",
                  "tasks": [simple("a", pollTimeoutSeconds=5, rateLimitPerFrequency=10),
                            simple("b", onStateChange={"x": 1})]}
    with pytest.raises(ConfigurationError) as caught:
        load_workflow(definition, passthrough_handlers(definition))
    message = str(caught.value)
    for word in ("pollTimeoutSeconds", "rateLimitPerFrequency", "onStateChange",
                 "failureWorkflow"):
        assert word in message
    # Exported definitions spell out defaults: empty or off values change nothing.
    load(simple("a", optional=False, startDelay=0, inputParameters={}, asyncComplete=False))
    app = load(simple("a", onStateChange={"x": 1}), ignore=["onStateChange"])
    assert list(app.stages) == ["a", END]


def test_missing_handlers_are_listed_together() -> None:
    definition = json.loads(EXAMPLE.read_text())
    with pytest.raises(ConfigurationError) as caught:
        load_workflow(definition, {"validate_order": passthrough})
    message = str(caught.value)
    assert "no handler for task(s) process_payment, update_inventory, send_email, send_sms" \
        in message
    assert "send_notification_join" not in message  # joins default to merged


def test_passthrough_handlers_cover_nested_and_untyped_simple_tasks() -> None:
    definition = {"name": "w", "tasks": [
        {"name": "a"}, fork("f", [{"name": "b"}], [simple("c")]),
        switch("s", {"x": [simple("d")]}, default=[simple("e")]),
        {"name": "loop", "type": "DO_WHILE", "loopOver": [simple("hidden")]}]}
    assert sorted(passthrough_handlers(definition)) == ["a", "b", "c", "d", "e", "hidden"]


@pytest.mark.parametrize(("tasks", "needle"), [
    ([simple("a"), fork("f", [{"name": "w", "type": "HUMAN"}], [simple("b")])],
     "HUMAN 'w': a waiting task inside a FORK_JOIN branch is not supported"),
    ([{"name": "w", "type": "WAIT", "inputParameters": {"duration": "soon"}}],
     "duration 'soon' is not like"),
    ([{"name": "w", "type": "WAIT", "inputParameters": {"until": "2030-01-01 25:00"}}],
     "until '2030-01-01 25:00' is not a real date and time"),
    ([{"name": "l", "type": "DO_WHILE", "loopOver": [simple("a")]}],
     "needs a loopCondition (JavaScript) or items"),
    ([switch("s", {"x": [simple("a")]}) | {"evaluatorType": "python"}],
     "evaluatorType 'python' is not supported"),
    ([switch("s", {"x": [simple("a")]}) | {"expression": None}], "needs an expression"),
    ([simple("a"), fork("f", [simple("b")])], "two or more non-empty branches"),
    ([simple("a"), {"name": "j", "type": "JOIN"}], "JOIN 'j' does not follow a FORK_JOIN"),
    ([simple("a"), fork("f", [simple("b")], [simple("c")]),
      {"name": "j", "type": "JOIN", "joinOn": ["b_ref", "elsewhere"]}],
     "must name tasks of the FORK_JOIN's branches"),
    ([simple("a"), fork("f", [simple("b")], [simple("c")]),
      {"name": "j", "type": "JOIN", "joinMode": "LATER"}], "joinMode 'LATER' is not SYNC"),
    ([simple("a"), simple("a")], "taskReferenceName 'a_ref' is used 2 times"),
    ([simple("a", inputParameters=[1])], "inputParameters must be an object"),
    ([simple("a", taskDefinition={"retryCount": 1, "pollTimeoutSeconds": 5})],
     "unsupported taskDefinition option(s) pollTimeoutSeconds"),
    ([simple("a", retryLogic="SOMETIMES")], "retryLogic 'SOMETIMES' is not one of"),
    ([simple("a", retryCount=-1)], "retryCount must be a whole number"),
    ([simple("a", timeoutSeconds="soon")], "timeoutSeconds must be a number"),
    ([simple("bad name")], "task name 'bad name' is not a valid stage name"),
    (["just a string"], "is not an object with a name"),
])
def test_invalid_definitions_say_what_is_wrong(tasks: list[Any], needle: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be loaded") as caught:
        load(*tasks)
    assert needle in str(caught.value)


def test_several_kinds_of_problem_come_in_one_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_workflow({"name": "w", "tasks": [simple("a", retryCount="x"),
                                              {"name": "h", "type": "NOOP"}]}, {})
    message = str(caught.value)
    assert "unsupported task type(s): 'h' (NOOP)" in message
    assert "retryCount must be" in message and "no handler for task(s) a" in message


@pytest.mark.parametrize(("text", "needle"), [
    ('{"name": "w", "tasks": [', "is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"name": "w"}', "needs a non-empty 'tasks' list"),
    ('{"name": "w", "tasks": []}', "needs a non-empty 'tasks' list"),
    ('{"name": "w", "version": "one", "tasks": [{"name": "a"}]}', "version must be an integer"),
])
def test_malformed_json_is_a_configuration_error(tmp_path: Path, text: str,
                                                 needle: str) -> None:
    file = tmp_path / "wf.json"
    file.write_text(text)
    with pytest.raises(ConfigurationError, match=needle):
        load_workflow(file, {"a": passthrough})
    if text.startswith("{"):
        with pytest.raises(ConfigurationError, match=needle):
            load_workflow(text, {"a": passthrough})


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read workflow file"):
        load_workflow(tmp_path / "nope.json", {})
