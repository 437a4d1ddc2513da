"""``streamtask signal``: complete a waiting WAIT, HUMAN or asyncComplete task of a run."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from streamtask.cli.options import Bootstrap, json_object
from streamtask.cli.pipeline import SubWorkflows, Target
from streamtask.cli.workflow import workflow_target
from streamtask.kafka.clients import wait_for_cluster


def signal(
    target: Target,
    run_id: Annotated[str, typer.Argument(
        metavar="RUN_ID", help="The run, as printed by workflow start.")],
    task_ref: Annotated[str, typer.Argument(
        metavar="TASK_REF",
        help="The taskReferenceName of the WAIT, HUMAN or asyncComplete task.")],
    output: Annotated[str, typer.Option(
        "--output", "-o", help="The task's output as a JSON object.")] = "{}",
    status: Annotated[Literal["COMPLETED", "FAILED"], typer.Option(
        help="COMPLETED (the run goes on) or FAILED (the run is dead-lettered).")
    ] = "COMPLETED",
    reason: Annotated[str | None, typer.Option(help="Why, when FAILED.")] = None,
    bootstrap: Bootstrap = None,
    sub_workflows: SubWorkflows = None,
) -> None:
    """Send the signal a waiting task of a run waits for; it waits there if it comes first."""
    value = json_object(output, "--output", "the task's output")
    app = workflow_target(target, bootstrap, sub_workflows=sub_workflows)
    wait_for_cluster(app.kafka)
    app.signal(run_id, task_ref, value, status=status, reason=reason)
    typer.echo(f"signalled {task_ref} of run {run_id}")
