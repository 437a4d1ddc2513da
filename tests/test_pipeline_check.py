"""``pipeline check`` finds every problem of a definition at once: Avro compatibility along
each edge (by the specification's resolution rules), topics, retry ladders, references,
joins; cycles are warnings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamtask import App
from streamtask.model.pipeline import Switch, merged
from streamtask.model.workflow import load_workflow, passthrough_handlers
from streamtask.ops.check import WARNING, check, resolution_problems
from streamtask.retry import RetryPolicy

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "order_fulfillment.json"


def record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def field(name: str, kind: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, **extra}


def enum(symbols: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Colour", "symbols": symbols, **extra}


NODE = record("Node", field("value", "int"), field("next", ["null", "Node"]),
              namespace="lists")
NODE_LONG = record("Node", field("value", "long"), field("next", ["null", "lists.Node"]),
                   field("label", "string", default=""), namespace="lists")

COMPATIBLE: list[tuple[str, Any, Any]] = [
    ("same primitive", "string", "string"),
    ("int promotes to long", "int", "long"),
    ("int promotes to double", "int", "double"),
    ("long promotes to float", "long", "float"),
    ("float promotes to double", "float", "double"),
    ("string reads as bytes", "string", "bytes"),
    ("bytes read as string", "bytes", "string"),
    ("logical type over its primitive", {"type": "int", "logicalType": "date"}, "int"),
    ("reader union has the writer's type", "int", ["null", "int"]),
    ("reader union branch by promotion", "int", ["null", "string", "long"]),
    ("every writer branch readable", ["null", "int"], ["null", "long", "string"]),
    ("reader field with a default", record("R", field("a", "int")),
     record("R", field("a", "int"), field("b", "string", default="x"))),
    ("writer's extra field is skipped", record("R", field("a", "int"), field("b", "int")),
     record("R", field("a", "long"))),
    ("reader field aliased to the writer's", record("R", field("old", "int")),
     record("R", field("new", "int", aliases=["old"]))),
    ("record renamed with an alias", record("Old", field("a", "int")),
     record("New", field("a", "int"), aliases=["Old"])),
    ("enum with more reader symbols", enum(["RED"]), enum(["RED", "BLUE"])),
    ("enum with a reader default", enum(["RED", "TEAL"]), enum(["RED"], default="RED")),
    ("array items promoted", {"type": "array", "items": "int"},
     {"type": "array", "items": "double"}),
    ("map values promoted", {"type": "map", "values": "float"},
     {"type": "map", "values": "double"}),
    ("fixed of the same size", {"type": "fixed", "name": "Id", "size": 16},
     {"type": "fixed", "name": "Id", "size": 16}),
    ("recursive type by named reference", NODE, NODE_LONG),
    ("nested record by reference", record("Order", field("ship", record(
        "Address", field("city", "string"))), field("bill", "Address"), namespace="shop"),
     record("Order", field("ship", record("Address", field("city", "bytes"))),
            field("bill", {"type": "shop.Address"}), namespace="shop")),
]

INCOMPATIBLE: list[tuple[str, Any, Any, str]] = [
    ("long does not narrow to int", "long", "int", "long cannot be read as int"),
    ("double does not narrow to float", "double", "float", "cannot be read as float"),
    ("string is not int", "string", "int", "cannot be read as int"),
    ("a writer union branch is unreadable", ["null", "string"], "string",
     "null cannot be read as string"),
    ("no reader branch matches", "boolean", ["null", "int"], "matches no branch"),
    ("reader field without default missing", record("R", field("a", "int")),
     record("R", field("a", "int"), field("b", "string")), "b: the reader needs this field"),
    ("field type narrows", record("R", field("a", "long")), record("R", field("a", "int")),
     "a: the writer's long"),
    ("record names differ", record("A", field("a", "int")), record("B", field("a", "int")),
     "is not the reader's 'B'"),
    ("enum symbol missing without default", enum(["RED", "TEAL"]), enum(["RED"]),
     "lacks symbol(s) TEAL"),
    ("enum names differ", enum(["RED"]), {**enum(["RED"]), "name": "Hue"}, "not the reader's"),
    ("fixed sizes differ", {"type": "fixed", "name": "Id", "size": 8},
     {"type": "fixed", "name": "Id", "size": 16}, "fixed size 8"),
    ("array items narrow", {"type": "array", "items": "long"},
     {"type": "array", "items": "int"}, "array[]"),
    ("map is not array", {"type": "map", "values": "int"}, {"type": "array", "items": "int"},
     "map cannot be read as array"),
    ("nested field deep inside", record("O", field("ship", record("Ad", field("zip", "string")))),
     record("O", field("ship", record("Ad", field("zip", "int")))), "ship.zip"),
]


@pytest.mark.parametrize(("case", "writer", "reader"), COMPATIBLE, ids=[c[0] for c in COMPATIBLE])
def test_compatible_pairs(case: str, writer: Any, reader: Any) -> None:
    assert resolution_problems(writer, reader) == []


@pytest.mark.parametrize(("case", "writer", "reader", "needle"), INCOMPATIBLE,
                         ids=[c[0] for c in INCOMPATIBLE])
def test_incompatible_pairs(case: str, writer: Any, reader: Any, needle: str) -> None:
    problems = resolution_problems(writer, reader)
    assert problems and any(needle in problem for problem in problems), problems


def test_record_names_can_be_left_out_of_the_comparison() -> None:
    writer, reader = record("A", field("a", "int")), record("B", field("a", "long"))
    assert resolution_problems(writer, reader, record_names=False) == []


def noop(task: Any) -> Any:
    return task.payload


def sound_app() -> App:
    app = App("shop")
    order = record("Order", field("id", "string"), field("total", "double"), namespace="shop")
    paid = record("Paid", field("id", "string"), field("total", "double"),
                  field("payment", "string"), namespace="shop")
    app.stage("validate", payload=order, output=order, then="pay")(noop)
    app.stage("pay", payload=record("PayRequest", field("id", "string"),
                                    field("total", "double"), namespace="shop"),
              output=paid, then=Switch("payment", {"card": "ship"}, default="ship"))(noop)
    app.stage("ship", payload=record("ShipRequest", field("id", "string"),
                                     field("note", "string", default=""), namespace="shop"),
              then=("email", "sms"), compensate="refund")(noop)
    app.stage("refund", payload=record("Refund", field("id", "string"),
                                       namespace="shop"))(noop)
    app.stage("email", then="notified")(noop)
    app.stage("sms", then="notified")(noop)
    app.join("notified", branches=["email", "sms"])(merged)
    app.stage("audit")(noop)  # an entry point nothing reaches: fine
    return app


def test_a_sound_app_has_no_problems() -> None:
    assert check(sound_app()) == []


def test_a_workflow_loaded_app_has_no_problems() -> None:
    assert check(load_workflow(EXAMPLE, passthrough_handlers(EXAMPLE))) == []


def test_every_problem_is_reported_at_once() -> None:
    app = App("bad")
    app.stage("a", output=record("Out", field("id", "long")),
              then=Switch("kind", {"x": "b", "y": "nowhere"}), compensate="ghost")(noop)
    app.stage("b", payload=record("In", field("id", "int"), field("extra", "string")),
              then=("c", "d"))(noop)
    app.stage("c", then="j")(noop)
    app.stage("d")(noop)  # a branch that never reaches its join
    app.join("j", branches=["c", "d", "missing_branch"])(merged)
    app.stage("stray", then="lonely")(noop)
    app.join("lonely", branches=["stray", "d"])(merged)  # no fork leads to both
    app.stage("long")(noop)
    app.stage("spaced")(noop)
    # app.stage refuses such topics; stages built by other means are checked all the same
    app.stages["long"] = replace(app.stages["long"], topic="x" * 250)
    app.stages["spaced"] = replace(app.stages["spaced"], topic="has space")
    lines = check(app)
    expected = [
        "stage 'a': switch target 'nowhere' is not a stage",
        "stage 'a': compensate target 'ghost' is not a stage",
        "join 'j': branch 'missing_branch' is not a stage",
        "join 'j': branch 'd' does not send its results to the join",
        "join 'lonely': no fork (a stage with then=(a, b, ...)) leads to all of its branches",
        "stage 'a' -> 'b': Out cannot be read as In: id: the writer's long cannot be read as "
        "int",
        "stage 'a' -> 'b': Out cannot be read as In: extra: the reader needs this field",
        f"stage 'long': topic '{'x' * 250}' is not a valid Kafka topic name",
        "stage 'spaced': topic 'has space' is not a valid Kafka topic name",
    ]
    for needle in expected:
        assert any(needle in line for line in lines), (needle, lines)
    assert not [line for line in lines if line.startswith(WARNING)]


def test_payload_of_a_compensating_stage_must_read_the_failed_stages_payload() -> None:
    app = App("saga")
    app.stage("charge", payload=record("Charge", field("id", "string"), field("cents", "long")),
              compensate="refund")(noop)
    app.stage("refund", payload=record("Refund", field("id", "string"), field("cents", "int")))(
        noop)
    assert any("'charge' -> 'refund'" in line and "cents" in line for line in check(app))


def test_joins_are_not_checked_against_outputs() -> None:
    app = App("j")
    app.stage("split", then=("a", "b"))(noop)
    app.stage("a", output=record("A", field("x", "int")), then="meet")(noop)
    app.stage("b", output=record("B", field("y", "int")), then="meet")(noop)
    app.join("meet", branches=["a", "b"], payload=record("M", field("z", "string")))(merged)
    assert check(app) == []


def test_cycles_are_warnings() -> None:
    app = App("loop")
    app.stage("a", then="b")(noop)
    app.stage("b", then=Switch("again", {"yes": "a"}, default="c"))(noop)
    app.stage("c")(noop)
    assert check(app) == [f"{WARNING}cycle a -> b -> a: tasks can go round it forever"]


def test_retry_ladder_problems_and_short_retention_are_reported() -> None:
    app = App("r")
    app.stage("slow", retry=RetryPolicy(max_attempts=3, levels=(60, 3600)))(noop)
    app.stage("jittery")(noop)
    # Policies refuse such values when built; the check still catches a ladder that slipped
    # through (built by code that bypasses the constructor).
    object.__setattr__(app.stages["slow"].retry, "retention", 1800.0)
    object.__setattr__(app.stages["jittery"].retry, "jitter", 2.0)
    assert check(app) == [
        "stage 'slow': retry policy: retention 1800s is not longer than the longest delay "
        "3600s: retried tasks would expire unseen",
        "stage 'jittery': retry policy: jitter=2.0 must be a fraction between 0 and 1"]


def test_topics_that_differ_only_in_dot_and_underscore_collide() -> None:
    app = App("c")
    app.stage("a", topic="orders.new")(noop)
    app.stage("b", topic="orders_new")(noop)
    assert any("collides with" in line for line in check(app))
