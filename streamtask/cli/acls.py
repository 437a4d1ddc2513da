"""``streamtask acls``: the ACLs each role needs on a secured cluster, shown or granted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamtask.cli.options import AppRef, Bootstrap, open_app
from streamtask.config import load_kafka_settings
from streamtask.errors import ConfigurationError
from streamtask.kafka import acls

acls_app = typer.Typer(
    help="The Kafka ACLs a producer, a worker and an operator need for an app.",
    no_args_is_help=True)

RoleOption = Annotated[acls.Role, typer.Option(
    "--role", "-r", help="producer (sends tasks), worker (runs stages) or operator "
                         "(topics ensure, dlq).")]
UserOption = Annotated[str, typer.Option("--user", "-u", help="The SCRAM user name to grant.")]
StageOption = Annotated[list[str] | None, typer.Option(
    "--stage", "-s", help="A worker's stages (repeatable; default: all).")]


@acls_app.command("show")
def show(app_ref: AppRef, role: RoleOption, user: UserOption = "<user>",
         stage: StageOption = None) -> None:
    """Print the kafka-acls.sh commands that grant ROLE to USER (for the cluster admin)."""
    app = open_app(app_ref, None)
    for permission in acls.permissions(app, role, stage):
        typer.echo(permission.command(f"User:{user}"))


@acls_app.command("grant")
def grant(app_ref: AppRef, role: RoleOption, user: UserOption, stage: StageOption = None,
          bootstrap: Bootstrap = None) -> None:
    """Create ROLE's ACLs for USER, connected as the configured (admin) user."""
    app = open_app(app_ref, bootstrap)
    wanted = acls.permissions(app, role, stage)
    acls.grant(app.kafka, f"User:{user}", wanted)
    typer.echo(f"granted {len(wanted)} ACL(s) to User:{user} as {role} of {app.name}")


@acls_app.command("add-user")
def add_user(
    user: Annotated[str, typer.Argument(help="The SCRAM-SHA-512 user to create or update.")],
    password_file: Annotated[Path, typer.Option(
        "--password-file", help="A file holding the new user's password (never a flag).")],
    bootstrap: Bootstrap = None,
) -> None:
    """Create (or change the password of) a SCRAM-SHA-512 user, as the configured admin."""
    try:
        password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {password_file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{password_file} is not a text file holding a password "
                                 "(not UTF-8)") from None
    acls.upsert_user(load_kafka_settings(bootstrap=bootstrap), user, password)
    typer.echo(f"user {user} saved (SCRAM-SHA-512)")
