"""A team's PostgreSQL on this machine: Debian's cluster started if it is down, and a role with
its databases created where missing, so running it again changes nothing.

    python -m neuroflow.platforms.postgres --port 5432 --user neuroflow mlflow mlflow_auth optuna

`make postgres` and `make server` run it. There is no default password. A role that exists is
left as it is, its password included, so a live server that logs in as it keeps working. A role
that does not exist yet is created with the password libpq would log in with: PGPASSWORD, or
else the entry for it in ~/.pgpass (PGPASSFILE). Only its SCRAM-SHA-256 verifier is sent, on
psql's stdin: the password itself reaches no command line and no PostgreSQL log. The role may
create databases: tests make throwaway ones of their own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import click

USER = "neuroflow"
PORT = 5432  # Debian's first cluster
HOST = "127.0.0.1"
NAME = re.compile(r"[a-z_][a-z0-9_]*")  # names SQL and URLs take as they are


def url(database: str, user: str = USER, port: int = PORT, password: str = "") -> str:
    """`database`'s URL for SQLAlchemy, naming psycopg2, the driver requirements.txt pins. With
    no password in it, libpq reads PGPASSWORD or ~/.pgpass."""
    secret = f":{password}" if password else ""
    return f"postgresql+psycopg2://{user}{secret}@{HOST}:{port}/{database}"


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


def psql(script: str, port: int) -> str:
    """Run `script` as the postgres superuser, on stdin (so no secret in it is on a command
    line); what it printed."""
    command = ["psql", "--no-psqlrc", "--quiet", "--tuples-only", "--no-align"]
    command += ["-v", "ON_ERROR_STOP=1", "-p", str(port), "-d", "postgres"]
    return run(command, as_postgres=True, input=script)


def role_exists(user: str, port: int) -> bool:
    return psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{user}';", port).strip() == "1"


def create(user: str, databases: tuple[str, ...], port: int, password: str | None) -> bool:
    """The role `user`, created with `password` if it does not exist (an existing role is not
    touched), and each of `databases`, owned by it, where missing. Returns whether the role
    was created."""
    made = False
    if not role_exists(user, port):
        if not password:
            raise click.ClickException(
                f"role {user!r} does not exist and no password for it was given; expected it in "
                f"PGPASSWORD or in ~/.pgpass ({HOST}:{port}:*:{user}:<password>), never on a "
                "command line"
            )
        psql(f"CREATE ROLE {user} LOGIN CREATEDB PASSWORD '{scram_verifier(password)}';", port)
        made = True
    script = [
        f"SELECT 'CREATE DATABASE {database} OWNER {user}' WHERE NOT EXISTS "
        f"(SELECT FROM pg_database WHERE datname = '{database}') \\gexec"
        for database in databases
    ]
    if script:
        psql("\n".join(script), port)
    return made


def drop(user: str, databases: list[str], port: int) -> None:
    """Drop `databases` and then the role `user`, where they exist (throwaway ones, in tests)."""
    script = [f"DROP DATABASE IF EXISTS {database} WITH (FORCE);" for database in databases]
    psql("\n".join([*script, f"DROP ROLE IF EXISTS {user};"]), port)


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """What PostgreSQL stores for `password` under SCRAM-SHA-256 (RFC 5802, 7677), as psql's
    \\password sends it: a role created with it logs in with the password, which PostgreSQL
    never sees, so its logs cannot show it. (PostgreSQL prepares passwords with SASLprep,
    which leaves the ASCII ones that `openssl rand` makes as they are.)"""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server = hmac.digest(salted, b"Server Key", "sha256")
    encoded = [base64.b64encode(value).decode() for value in (salt, stored, server)]
    return f"SCRAM-SHA-256${iterations}:{encoded[0]}${encoded[1]}:{encoded[2]}"


def password_for(user: str, port: int, environ=os.environ) -> str | None:
    """The password libpq would send as `user` to this machine's cluster at 127.0.0.1:`port`
    for every database: PGPASSWORD, else the first line of the password file (PGPASSFILE,
    default ~/.pgpass) for that host (or *), port (or *), any database (*) and user (or *).
    libpq ignores a password file that others may read; so does this, saying so."""
    if environ.get("PGPASSWORD"):
        return environ["PGPASSWORD"]
    path = Path(environ.get("PGPASSFILE") or Path.home() / ".pgpass").expanduser()
    try:
        mode, lines = path.stat().st_mode, path.read_text().splitlines()
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise click.ClickException(
            f"{path} has mode {stat.filemode(mode)}, so libpq ignores it; expected -rw------- "
            f"(chmod 600 {path})"
        )
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = pgpass_fields(line)
        if len(fields) != 5:
            continue
        host, listens, database, role, password = fields
        ours = host in ("*", HOST) and listens in ("*", str(port)) and role in ("*", user)
        if ours and database == "*":
            return password
    return None


def pgpass_fields(line: str) -> list[str]:
    """The five colon-separated fields of a .pgpass line, with \\: and \\\\ unescaped."""
    fields, current, escaped = [], "", False
    for character in line:
        if escaped:
            current, escaped = current + character, False
        elif character == "\\":
            escaped = True
        elif character == ":" and len(fields) < 4:
            fields.append(current)
            current = ""
        else:
            current += character
    return [*fields, current]


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
    """Start Debian's PostgreSQL, create the role USER if it does not exist (its password from
    PGPASSWORD or ~/.pgpass) and DATABASES owned by it where missing; print their URLs."""
    cluster = start_cluster(port)
    made = create(user, databases, port, password_for(user, port))
    said = "created" if made else "exists, left as it is"
    click.echo(f"PostgreSQL {cluster}, role {user} ({said}):", err=True)
    for database in databases:
        click.echo(url(database, user, port))


if __name__ == "__main__":
    from neuroflow import cli

    cli.run(postgres)
