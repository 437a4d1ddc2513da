"""``streamtask workflow start``: start a run of a Conductor workflow app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamtask.cli.options import Bootstrap, json_object
from streamtask.cli.pipeline import SubWorkflows, Target, TaskDefs, open_target
from streamtask.config import KafkaSettings
from streamtask.errors import ConfigurationError
from streamtask.kafka.clients import wait_for_cluster
from streamtask.model.workflow import WorkflowApp

workflow_app = typer.Typer(help="Start Conductor workflow runs.", no_args_is_help=True)


@workflow_app.command("start")
def start(
    target: Target,
    input_json: Annotated[str, typer.Option(
        "--input", "-i", help="The workflow input as a JSON object.")] = "{}",
    correlation_id: Annotated[str | None, typer.Option(
        help="Conductor's correlationId, readable as ${workflow.correlationId}.")] = None,
    bootstrap: Bootstrap = None,
    task_defs: TaskDefs = None,
    sub_workflows: SubWorkflows = None,
) -> None:
    """Start one run and print its id (the run_id every task of the run carries)."""
    value = json_object(input_json, "--input", "Conductor's workflow input")
    app = workflow_target(target, bootstrap, task_defs, sub_workflows)
    wait_for_cluster(app.kafka)
    typer.echo(app.start(value, correlation_id=correlation_id))


def workflow_target(target: str, bootstrap: str | None, task_defs: Path | None = None,
                    sub_workflows: list[Path] | None = None) -> WorkflowApp:
    """The workflow app a TARGET names, pointed at ``bootstrap`` when one is given."""
    app = open_target(target, task_defs, sub_workflows)
    if not isinstance(app, WorkflowApp):
        raise ConfigurationError(f"{target!r} is not a workflow app: load it with "
                                 "streamtask.model.workflow.load_workflow, or give its JSON file")
    if bootstrap:
        app.kafka = KafkaSettings(bootstrap=bootstrap, extra=app.kafka.extra,
                                  connect_timeout=app.kafka.connect_timeout)
    return app
