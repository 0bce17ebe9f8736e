"""A team's PostgreSQL on this machine: Debian's cluster started if it is down, and a role with
its databases created where missing, so running it again changes nothing.

    PGPASSWORD=... python -m neuroflow.postgres --port 5432 --user neuroflow mlflow optuna

`make server` runs it before `mlflow server`, `.ci/run` before the tests. The password comes
from PGPASSWORD, where libpq (and so MLflow and Optuna) reads it too, and is set on the role each
time. The role may create databases: the tests make throwaway ones of their own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import click

from neuroflow import cli

# The defaults of `make server` and `.ci/run`, which the tests connect with.
USER = "neuroflow"
PASSWORD = "change-me"
PORT = 5432  # Debian's first cluster
NAME = re.compile(r"[a-z_][a-z0-9_]*")  # names SQL and URLs take as they are


def url(database: str, user: str = USER, port: int = PORT, password: str = "") -> str:
    """`database`'s URL for SQLAlchemy, naming psycopg2, the driver requirements.txt pins."""
    secret = f":{password}" if password else ""
    return f"postgresql+psycopg2://{user}{secret}@127.0.0.1:{port}/{database}"


def run(command: list[str], as_postgres: bool = False, **options) -> str:
    """Run `command` as root (through sudo when not root already), or as the postgres user;
    its output, or a one-line error."""
    if shutil.which(command[0]) is None:
        raise click.ClickException(
            f"no {command[0]} on the PATH; expected Debian's PostgreSQL (apt-get install "
            "postgresql)"
        )
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    if os.geteuid() != 0:
        prefix = ["sudo", *prefix]
    full = [*prefix, *command]
    try:
        done = subprocess.run(full, capture_output=True, text=True, cwd="/", **options)
    except OSError as error:
        raise click.ClickException(f"cannot run {full[0]}: {error.strerror}") from None
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        raise click.ClickException(f"{command[0]} failed: {said[0]}")
    return done.stdout


def start_cluster(port: int) -> str:
    """Start the cluster that listens on `port`, if it is down. Returns its "version/name"."""
    listed = [line.split() for line in run(["pg_lsclusters", "--no-header"]).splitlines()]
    for version, name, listens, status, *_ in filter(None, listed):
        if int(listens) == port:
            if not status.startswith("online"):
                run(["pg_ctlcluster", version, name, "start"])
            return f"{version}/{name}"
    found = ", ".join(f"{row[0]}/{row[1]} on {row[2]}" for row in listed if row) or "none"
    raise click.ClickException(
        f"no PostgreSQL cluster listens on port {port} (pg_lsclusters: {found}); expected one, "
        "or another --port"
    )


def create(user: str, password: str, databases: tuple[str, ...], port: int) -> None:
    """The role `user`, which logs in with `password`, and each of `databases` owned by it."""
    quoted = "'" + password.replace("'", "''") + "'"
    script = [
        f"SELECT 'CREATE ROLE {user}' WHERE NOT EXISTS "
        f"(SELECT FROM pg_roles WHERE rolname = '{user}') \\gexec",
        f"ALTER ROLE {user} LOGIN CREATEDB PASSWORD {quoted};",
    ]
    script += [
        f"SELECT 'CREATE DATABASE {database} OWNER {user}' WHERE NOT EXISTS "
        f"(SELECT FROM pg_database WHERE datname = '{database}') \\gexec"
        for database in databases
    ]
    psql = ["psql", "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-p", str(port)]
    # On stdin, so the password is on no command line.
    run([*psql, "-d", "postgres"], as_postgres=True, input="\n".join(script))


def check_name(context, param, value):
    for name in value if isinstance(value, tuple) else (value,):
        if not NAME.fullmatch(name):
            raise click.BadParameter(f"{name!r}; expected lower-case letters, digits and _")
    return value


@click.command()
@click.option("--port", default=PORT, show_default=True, help="the cluster's port")
@click.option("--user", default=USER, show_default=True, callback=check_name, help="the role")
@click.argument("databases", nargs=-1, required=True, callback=check_name)
def postgres(port: int, user: str, databases: tuple[str, ...]):
    """Start Debian's PostgreSQL and create the role USER owning DATABASES; print their URLs."""
    cluster = start_cluster(port)
    create(user, os.environ.get("PGPASSWORD", PASSWORD), databases, port)
    click.echo(f"PostgreSQL {cluster}, role {user}:", err=True)
    for database in databases:
        click.echo(url(database, user, port))


if __name__ == "__main__":
    cli.run(postgres)
