"""A team's users and their roles, over MLflow's AuthServiceClient. An admin runs it against the
server; MLflow's client reads the admin's credentials from MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, and the server from MLFLOW_TRACKING_URI (or --server).

    python -m neuroflow.server users add alice --role trainer   # asks for alice's password
    python -m neuroflow.server users role alice --role releaser

A new user's password is asked for, or read from --password-file (its first line), never taken
from the command line. Each role is made on first use, with the grants neuroflow.server.roles
declares, and put back to them if they were changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from neuroflow.server.roles import ROLES, WORKSPACE

MIN_PASSWORD = 12  # MLflow's own minimum


def auth_client(server: str):
    import warnings

    with warnings.catch_warnings():  # what the server's modules warn of on import
        warnings.simplefilter("ignore")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=server)


def ensure_role(client, name: str):
    """The MLflow role `name`, made if missing, with exactly the grants ROLES gives it."""
    description, grants = ROLES[name]
    existing = {role.name: role for role in client.list_roles(WORKSPACE)}
    role = existing.get(name) or client.create_role(WORKSPACE, name, description)
    granted = {
        (grant.resource_type, grant.resource_pattern): grant
        for grant in client.list_role_permissions(role.id)
    }
    for resource_type, permission in grants.items():
        grant = granted.get((resource_type, "*"))
        if grant is None:
            client.add_role_permission(role.id, resource_type, "*", permission)
        elif grant.permission != permission:
            client.update_role_permission(grant.id, permission)
    return role


def set_role(client, username: str, name: str) -> None:
    """Give `username` the role `name`, and take away the other team roles it had."""
    role = ensure_role(client, name)
    for held in client.list_user_roles(username):
        if held.name in ROLES and held.name != name:
            client.unassign_role(username, held.id)
    if all(held.id != role.id for held in client.list_user_roles(username)):
        client.assign_role(username, role.id)


def read_password(password_file: Path | None, username: str) -> str:
    if password_file is not None:
        lines = password_file.read_text().splitlines()
        password = lines[0] if lines else ""
    else:
        password = click.prompt(
            f"password for {username}", hide_input=True, confirmation_prompt=True
        )
    if len(password) < MIN_PASSWORD:
        raise click.BadParameter(
            f"the password for {username!r} has {len(password)} characters; expected at least "
            f"{MIN_PASSWORD}",
            param_hint="the password",
        )
    return password


def refused(error) -> click.ClickException:
    """One line for an MlflowException the server answered with."""
    said = str(error).splitlines()[0] if str(error) else type(error).__name__
    return click.ClickException(f"the server refused: {said}")


server_option = click.option(
    "--server",
    default=lambda: os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
    show_default="MLFLOW_TRACKING_URI, else http://127.0.0.1:5000",
    help="the tracking server",
)
role_option = click.option(
    "--role", type=click.Choice(list(ROLES)), required=True, help="what the user may do"
)


@click.group()
def users():
    """A team's users and their roles (an admin's credentials in MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD)."""


@users.command()
@click.argument("username")
@role_option
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a file whose first line is the new user's password; asked for when not given",
)
@server_option
def add(username: str, role: str, password_file: Path | None, server: str):
    """Create USERNAME with a role."""
    from mlflow.exceptions import MlflowException

    password = read_password(password_file, username)
    client = auth_client(server)
    try:
        client.create_user(username, password)
        set_role(client, username, role)
    except MlflowException as error:
        raise refused(error) from None
    click.echo(f"user {username} added on {server} as a {role}: {ROLES[role][0]}")


@users.command(name="role")
@click.argument("username")
@role_option
@server_option
def change_role(username: str, role: str, server: str):
    """Give USERNAME another role."""
    from mlflow.exceptions import MlflowException

    try:
        set_role(auth_client(server), username, role)
    except MlflowException as error:
        raise refused(error) from None
    click.echo(f"user {username} on {server} is now a {role}: {ROLES[role][0]}")
