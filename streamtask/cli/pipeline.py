"""``streamtask pipeline check`` and ``streamtask graph``: look at a pipeline before running it.

Both take a TARGET: a Conductor workflow file (``*.json``, loaded with pass-through handlers,
since only its shape matters here) or an app reference (``module:attribute``).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from streamtask.errors import ConfigurationError
from streamtask.loading import load_app
from streamtask.model.app import App
from streamtask.model.workflow import load_workflow, parse_definition, passthrough_handlers
from streamtask.ops.check import WARNING, check
from streamtask.ops.graph import mermaid, svg

pipeline_app = typer.Typer(help="Check a pipeline's definition.", no_args_is_help=True)

Target = Annotated[str, typer.Argument(
    metavar="FILE|APP_REF", envvar="STREAMTASK_APP",
    help="A Conductor workflow file (*.json) or an app as module:attribute.")]


TaskDefs = Annotated[Path | None, typer.Option(
    "--task-defs", help="Conductor task definitions (a JSON list of TaskDefs) for a FILE.")]
SubWorkflows = Annotated[list[Path] | None, typer.Option(
    "--sub-workflow", help="A workflow file that SUB_WORKFLOW tasks of a FILE name "
    "(repeatable).")]


class Format(StrEnum):
    mermaid = "mermaid"
    svg = "svg"


def open_target(target: str, task_defs: Path | None = None,
                sub_workflows: list[Path] | None = None) -> App:
    """The app a TARGET names: a workflow file when it ends in ``.json`` (with pass-through
    handlers, and the given task definitions and sub-workflows), else an app ref."""
    if target.endswith(".json"):
        definition = parse_definition(Path(target))
        children = list(sub_workflows or [])
        return load_workflow(definition, passthrough_handlers(definition, children),
                             task_defs=task_defs, sub_workflows=children)
    if task_defs is not None or sub_workflows:
        raise ConfigurationError("--task-defs and --sub-workflow go with a workflow FILE; "
                                 "an app ref was loaded with its own")
    return load_app(target)


@pipeline_app.command("check")
def pipeline_check(target: Target, task_defs: TaskDefs = None,
                   sub_workflows: SubWorkflows = None) -> None:
    """Report every problem at once: schemas, topics, retry ladders, references, joins.

    Prints "ok" and exits 0 when nothing is wrong; warnings (cycles) are printed but do not
    fail the check. Otherwise prints one problem per line and exits 1.
    """
    lines = check(open_target(target, task_defs, sub_workflows))
    for line in lines:
        typer.echo(line)
    problems = [line for line in lines if not line.startswith(WARNING)]
    if problems:
        raise typer.Exit(1)
    typer.echo("ok")


def graph(
    target: Target,
    fmt: Annotated[Format, typer.Option(
        "--format", "-f", help="mermaid (a flowchart for Markdown) or svg (a picture).")
    ] = Format.mermaid,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write to this file instead of standard output.")] = None,
    task_defs: TaskDefs = None,
    sub_workflows: SubWorkflows = None,
) -> None:
    """Draw the pipeline: stages, topics, forks, joins, switches, retry ladders, DLQs."""
    app = open_target(target, task_defs, sub_workflows)
    text = svg(app) if fmt is Format.svg else mermaid(app)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {str(output)!r}: {exc.strerror or exc}") from exc
    typer.echo(f"wrote {output}", err=True)
