"""Both pictures of an app name every stage and topic; the SVG is well-formed XML and its
layout puts joins right of their branches and ladders under their stage."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from streamtask import App
from streamtask.model.pipeline import Switch, merged
from streamtask.model.workflow import load_workflow, passthrough_handlers
from streamtask.ops.graph import columns, edges, ladder, mermaid, svg
from streamtask.retry import NO_RETRIES, RetryPolicy

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "order_fulfillment.json"
SVG = "{http://www.w3.org/2000/svg}"


def noop(task: Any) -> Any:
    return task.payload


def shop() -> App:
    app = App("shop", version=3)
    app.stage("classify", then=Switch("kind", {"photo": "resize", 'odd"<&>': "store"},
                                      default="store"))(noop)
    app.stage("resize", then=("thumb", "scan"), compensate="undo")(noop)
    app.stage("thumb", then="meet")(noop)
    app.stage("scan", then="meet", retry=RetryPolicy(max_attempts=5, levels=(1, 10, 60)))(noop)
    app.join("meet", branches=["thumb", "scan"], then="store")(merged)
    app.stage("store", then="classify", retry=NO_RETRIES)(noop)  # a loop back
    app.stage("undo")(noop)
    return app


def every_topic(app: App) -> list[str]:
    return [t for s in app.stages.values()
            for t in [s.topic, *s.retry_topics, s.dlq_topic, *([s.changelog_topic] * bool(s.join))]]


def svg_texts(picture: str) -> list[str]:
    root = ET.fromstring(picture)
    assert root.tag == f"{SVG}svg"
    return [element.text or "" for element in root.iter(f"{SVG}text")]


def test_mermaid_names_every_stage_topic_and_edge() -> None:
    app = shop()
    chart = mermaid(app)
    assert chart.startswith("flowchart LR\n")
    for name in app.stages:
        assert f"<b>{name}</b>" in chart
    for topic in every_topic(app):
        assert topic in chart
    assert '|"kind = photo"|' in chart and '|"default"|' in chart
    assert "odd#quot;#lt;#amp;#gt;" in chart  # labels are escaped
    assert re.search(r"s1 -\.->\|\"compensate\"\| s6", chart)  # dashed
    assert '|"fork"| s2' in chart and '|"fork"| s3' in chart
    assert 's4{{"<b>meet</b>' in chart  # a join is a hexagon
    assert "retry 1m x2" in chart  # two retries share the 60 s level
    assert "s5 -->|fails| s5_dlq" in chart  # no retries: straight to the DLQ


def test_svg_is_xml_and_names_every_stage_and_topic() -> None:
    app = shop()
    texts = svg_texts(svg(app))
    assert "app shop (version 3)" in texts
    for name in app.stages:
        assert name in texts or f"{name} (join)" in texts
    for topic in every_topic(app):
        assert topic in texts
    assert 'kind = odd"<&>, default' in texts  # parallel edges share one label


def test_svg_draws_one_path_per_edge_with_dashed_compensation() -> None:
    app = shop()
    root = ET.fromstring(svg(app))
    paths = list(root.iter(f"{SVG}path"))
    drawn = [p for p in paths if p.get("marker-end")]
    # classify's "odd" case and its default both go to store: drawn once
    assert len(drawn) == len(edges(app)) - 1
    dashed = [p for p in drawn if p.get("stroke-dasharray")]
    assert [p.get("marker-end") for p in dashed] == ["url(#arrow-compensate)"]


def test_columns_follow_the_longest_path_and_ignore_back_edges() -> None:
    assert columns(shop()) == {"classify": 0, "resize": 1, "thumb": 2, "scan": 2, "meet": 3,
                               "store": 4, "undo": 2}


def test_ladders_sit_under_their_stage() -> None:
    app = shop()
    root = ET.fromstring(svg(app))
    texts = {t.text: t for t in root.iter(f"{SVG}text")}
    stage = texts["scan"]
    for _, topic in ladder(app.stages["scan"]):
        below = texts[topic]
        assert float(below.get("y", 0)) > float(stage.get("y", 0))
        assert float(below.get("x", 0)) > float(stage.get("x", 0))  # indented


def test_the_workflow_example_draws() -> None:
    app = load_workflow(EXAMPLE, passthrough_handlers(EXAMPLE))
    chart, picture = mermaid(app), svg(app)
    texts = svg_texts(picture)
    for name in app.stages:
        assert name in chart
    for topic in every_topic(app):
        assert topic in chart and topic in texts
    assert "send_notification_join (join)" in texts


def test_an_empty_app_draws_too() -> None:
    app = App("empty")
    assert mermaid(app).startswith("flowchart LR")
    assert svg_texts(svg(app)) == ["app empty"]
