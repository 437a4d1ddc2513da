"""Pictures of an app: a Mermaid flowchart and a self-contained SVG.

Both show the same things: every stage with its input topic, the edges a result can take
(chains, forks, switch cases labelled with their value, joins with their changelog topic),
compensation edges (dashed), and under each stage its retry ladder ending in its
dead-letter queue. The SVG is laid out
here, with no external tool: stages go in columns by their longest distance from an entry
stage (so a join sits right of all its branches), in declaration order within a column.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from streamtask.model.app import App, Stage
from streamtask.model.pipeline import Switch
from streamtask.retry import level_name


@dataclass(frozen=True)
class Edge:
    """A way a stage's tasks reach another stage: then, fork, switch or compensate."""

    source: str
    target: str
    kind: str
    label: str = ""


def edges(app: App) -> list[Edge]:
    """Every declared edge between stages of ``app`` (targets that do not exist included)."""
    found = []
    for stage in app.stages.values():
        then = stage.then
        if isinstance(then, Switch):
            found += [Edge(stage.name, t, "switch", f"{then.field} = {v}")
                      for v, t in then.cases.items()]
            if then.default is not None:
                found.append(Edge(stage.name, then.default, "switch", "default"))
        elif isinstance(then, tuple):
            found += [Edge(stage.name, target, "fork", "fork") for target in then]
        elif then is not None:
            found.append(Edge(stage.name, then, "then"))
        if stage.compensate is not None:
            found.append(Edge(stage.name, stage.compensate, "compensate", "compensate"))
    return found


def ladder(stage: Stage) -> list[tuple[str, str]]:
    """(label, topic) of each retry level of ``stage``, then of its dead-letter queue."""
    delays = stage.retry.retry_delays()
    levels = [(f"retry {level_name(delay)}" + (f" x{n}" if (n := delays.count(delay)) > 1
                                               else ""), topic)
              for topic, delay in stage.retry_topics.items()]
    return [*levels, ("dead letters", stage.dlq_topic)]


# -- Mermaid ---------------------------------------------------------------------------------


def mermaid(app: App) -> str:
    """A Mermaid ``flowchart LR`` of the app (paste it into Markdown)."""
    ids = {name: f"s{index}" for index, name in enumerate(app.stages)}
    version = f", version {app.version}" if app.version is not None else ""
    lines = ["flowchart LR", f"  %% app {app.name}{version}"]
    classes: dict[str, list[str]] = {"join": [], "retry": [], "dlq": []}
    for name, stage in app.stages.items():
        lines += _mermaid_stage(stage, ids[name], classes)
    for edge in edges(app):
        target = ids.get(edge.target, f"missing_{len(lines)}[\"missing: {_md(edge.target)}\"]")
        arrow = "-.->" if edge.kind == "compensate" else "-->"
        label = f'|"{_md(edge.label)}"|' if edge.label else ""
        lines.append(f"  {ids[edge.source]} {arrow}{label} {target}")
    lines += ["  classDef join fill:#ebe4f7,stroke:#6c4ab6",
              "  classDef retry fill:#fff4d6,stroke:#d9a400",
              "  classDef dlq fill:#fde2e1,stroke:#c0392b"]
    lines += [f"  class {','.join(nodes)} {cls}" for cls, nodes in classes.items() if nodes]
    return "\n".join(lines) + "\n"


def _mermaid_stage(stage: Stage, node: str, classes: dict[str, list[str]]) -> list[str]:
    """The stage's node (a hexagon for a join) and its ladder: retry levels, then the DLQ."""
    text = f'"<b>{_md(stage.name)}</b><br/>{_md(stage.topic)}"'
    lines = [f"  {node}{{{{{text}}}}}" if stage.join else f"  {node}[{text}]"]
    if stage.join:  # its waiting forks live in a compacted changelog topic
        classes["join"].append(node)
        lines += [f'  {node}_log[("changelog<br/>{_md(stage.changelog_topic)}")]',
                  f"  {node} ---|state| {node}_log"]
    previous, steps = node, ladder(stage)
    for number, (label, topic) in enumerate(steps):
        text = f'"{_md(label)}<br/>{_md(topic)}"'
        if number < len(steps) - 1:
            step, shape, arrow = f"{node}_r{number}", f"[{text}]", "fails"
        else:
            step, shape, arrow = f"{node}_dlq", f"[({text})]", "exhausted" if number else "fails"
        classes["dlq" if step.endswith("_dlq") else "retry"].append(step)
        lines += [f"  {step}{shape}", f"  {previous} -->|{arrow}| {step}"]
        previous = step
    return lines


def _md(text: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return (text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
            .replace(">", "#gt;").replace("|", "#124;"))


# -- SVG -------------------------------------------------------------------------------------

_BOX_H, _STEP_H, _GAP, _COL_GAP, _MARGIN, _INDENT, _LANE = 44, 34, 26, 100, 30, 18, 14
_COLORS = {"stage": ("#eef4fb", "#3d6fa8"), "join": ("#ebe4f7", "#6c4ab6"),
           "retry": ("#fff4d6", "#d9a400"), "dlq": ("#fde2e1", "#c0392b")}
_EDGE_COLORS = {"then": "#445", "fork": "#2d7d46", "switch": "#a35a00",
                "compensate": "#c0392b"}


@dataclass
class _Box:
    x: float
    y: float
    width: float
    height: float = _BOX_H

    @property
    def mid_y(self) -> float:
        return self.y + self.height / 2


def columns(app: App) -> dict[str, int]:
    """Each stage's column: its longest distance from an entry stage, ignoring back edges."""
    graph = {name: [e.target for e in edges(app) if e.source == name and e.target in app.stages]
             for name in app.stages}
    entered = {target for targets in graph.values() for target in targets}
    order: list[str] = []
    state: dict[str, int] = {}
    back: set[tuple[str, str]] = set()

    def visit(name: str) -> None:
        state[name] = 1
        for target in graph[name]:
            if state.get(target) == 1:
                back.add((name, target))
            elif target not in state:
                visit(target)
        state[name] = 2
        order.append(name)

    for name in [n for n in app.stages if n not in entered] + list(app.stages):
        if name not in state:
            visit(name)
    depth = dict.fromkeys(app.stages, 0)
    for name in reversed(order):  # a topological order of the graph without back edges
        for target in graph[name]:
            if (name, target) not in back:
                depth[target] = max(depth[target], depth[name] + 1)
    return depth


def svg(app: App) -> str:
    """A self-contained SVG picture of the app.

    Edges between neighbouring columns are curves through the gap between them; edges that
    skip columns or go backwards each get a lane above the boxes, so no edge crosses a box.
    """
    depth = columns(app)
    drawn = [e for e in _merged(edges(app)) if e.target in app.stages]
    laned = [e for e in drawn if depth[e.target] != depth[e.source] + 1]
    top = 44.0 + _LANE * len(laned)
    boxes, height = _layout(app, depth, top)
    width = max((b.x + b.width for b in boxes.values()), default=0) + _MARGIN
    version = f" (version {app.version})" if app.version is not None else ""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
             'font-family="Helvetica, Arial, sans-serif" font-size="12">',
             _defs(), '<rect width="100%" height="100%" fill="white"/>',
             _text(_MARGIN, 20, f"app {app.name}{version}", weight="bold", size=14)]
    for name, stage in app.stages.items():  # a group per stage: the web console marks it
        parts += [f'<g class="stage" data-stage={quoteattr(name)}>',
                  *_stage_svg(stage, boxes[name]), "</g>"]
    for edge in drawn:
        lane = laned.index(edge) if edge in laned else None
        parts.append(_edge_svg(edge, boxes[edge.source], boxes[edge.target], lane))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _merged(found: list[Edge]) -> list[Edge]:
    """Parallel edges (same ends and kind) as one, their labels joined."""
    out: dict[tuple[str, str, str], Edge] = {}
    for edge in found:
        key = (edge.source, edge.target, edge.kind)
        known = out.get(key)
        out[key] = edge if known is None else Edge(*key, f"{known.label}, {edge.label}")
    return list(out.values())


def _layout(app: App, depth: dict[str, int], top: float) -> tuple[dict[str, _Box], float]:
    """A box per stage, the first row at ``top``; returns them and the picture's height.

    Widths come from average glyph widths of the fonts used (7.2 px a character at 12 px
    bold, less for the smaller topic lines): no font metrics are at hand, and a slightly
    roomy box is better than clipped text.
    """
    width = {name: 24 + max(7.2 * (len(name) + 7), 6.3 * len(stage.topic),
                            5.8 * len(stage.changelog_topic) if stage.join else 0,
                            *(_INDENT + 5.8 * len(topic) for _, topic in ladder(stage)))
             for name, stage in app.stages.items()}
    boxes: dict[str, _Box] = {}
    x, bottom = float(_MARGIN), top
    for column in range(max(depth.values(), default=-1) + 1):
        members = [name for name in app.stages if depth[name] == column]
        column_width = max(width[name] for name in members) if members else 0
        y = top
        for name in members:
            stage = app.stages[name]
            boxes[name] = _Box(x, y, column_width, _BOX_H + (16 if stage.join else 0))
            y += boxes[name].height + len(ladder(stage)) * (_STEP_H + 10) + _GAP
        bottom = max(bottom, y)
        x += column_width + _COL_GAP
    return boxes, bottom + _MARGIN


def _defs() -> str:
    markers = "".join(
        f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="{color}"/></marker>' for kind, color in _EDGE_COLORS.items())
    return f"<defs>{markers}</defs>"


def _stage_svg(stage: Stage, box: _Box) -> Iterator[str]:
    fill, stroke = _COLORS["join" if stage.join else "stage"]
    yield (f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
           f'height="{box.height:.1f}" rx="6" fill="{fill}" stroke="{stroke}"/>')
    title = f"{stage.name} (join)" if stage.join else stage.name
    yield _text(box.x + 10, box.y + 18, title, weight="bold")
    yield _text(box.x + 10, box.y + 35, stage.topic, size=11, fill="#555")
    if stage.join:
        yield _text(box.x + 10, box.y + 51, stage.changelog_topic, size=10, fill="#6c4ab6")
    top = box.y + box.height
    steps = ladder(stage)
    for number, (label, topic) in enumerate(steps):
        kind = "dlq" if number == len(steps) - 1 else "retry"
        fill, stroke = _COLORS[kind]
        y = top + 10
        x = box.x + _INDENT
        yield (f'<line x1="{x - _INDENT / 2:.1f}" y1="{top:.1f}" x2="{x - _INDENT / 2:.1f}" '
               f'y2="{y + _STEP_H / 2:.1f}" stroke="{stroke}"/>'
               f'<line x1="{x - _INDENT / 2:.1f}" y1="{y + _STEP_H / 2:.1f}" x2="{x:.1f}" '
               f'y2="{y + _STEP_H / 2:.1f}" stroke="{stroke}"/>')
        yield (f'<rect x="{x:.1f}" y="{y:.1f}" width="{box.width - _INDENT:.1f}" '
               f'height="{_STEP_H}" rx="4" fill="{fill}" stroke="{stroke}"/>')
        yield _text(x + 8, y + 14, label, size=11, weight="bold")
        yield _text(x + 8, y + 28, topic, size=10, fill="#555")
        top = y + _STEP_H


def _edge_svg(edge: Edge, source: _Box, target: _Box, lane: int | None) -> str:
    color = _EDGE_COLORS[edge.kind]
    sx, sy = source.x + source.width, source.mid_y
    tx, ty = target.x, target.mid_y
    if lane is None:  # to the next column: an S-curve through the gap
        bend = (tx - sx) / 2
        path = f"M{sx:.1f},{sy:.1f} C{sx + bend:.1f},{sy:.1f} {tx - bend:.1f},{ty:.1f} " \
               f"{tx:.1f},{ty:.1f}"
        label_x, label_y, anchor = (sx + tx) / 2, (sy + ty) / 2 - 4, "middle"
    else:  # up into its lane in the gap after the source, across, down before the target
        y = 36.0 + _LANE * lane
        out_x, in_x = sx + 12 + (lane % 6) * 7, tx - 12 - (lane % 6) * 7
        path = f"M{sx:.1f},{sy:.1f} H{out_x:.1f} V{y:.1f} H{in_x:.1f} V{ty:.1f} H{tx:.1f}"
        label_x, label_y, anchor = out_x + 6, y - 3, "start"
    dash = ' stroke-dasharray="6 4"' if edge.kind == "compensate" else ""
    label = _text(label_x, label_y, edge.label, size=10, fill=color, anchor=anchor,
                  halo=True) if edge.label else ""
    return (f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.4"{dash} '
            f'marker-end="url(#arrow-{edge.kind})"/>{label}')


def _text(x: float, y: float, text: str, *, size: int = 12, weight: str = "normal",
          fill: str = "#222", anchor: str = "start", halo: bool = False) -> str:
    extra = ' stroke="white" stroke-width="3" paint-order="stroke"' if halo else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="{weight}" '
            f'fill={quoteattr(fill)} text-anchor="{anchor}"{extra}>{escape(text)}</text>')
