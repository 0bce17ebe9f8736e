"""`make server`: MLflow's tracking server with its basic-auth app, its runs in PostgreSQL, its
artifacts proxied, checked before it starts so that a mistake costs one line.

- **Secrets** come from the environment or from a secrets file outside the repository that
  only its owner may read (default ~/.config/neuroflow/server.env, `NAME=value` lines):
  MLFLOW_AUTH_ADMIN_PASSWORD, the admin's password (at least 12 characters; MLflow makes the
  `admin` user with it on first start), and MLFLOW_FLASK_SERVER_SECRET_KEY, which signs the
  UI's forms. There is no default for either, and neither goes on a command line.
- **Binding:** 127.0.0.1 unless told otherwise; any other host must come with --allowed-hosts,
  the names teammates reach the server by (MLflow refuses requests addressed to others), and
  with TLS.
- **TLS:** --tls-cert and --tls-key serve HTTPS (uvicorn's own TLS); --tls-by-proxy says that a
  reverse proxy in front serves it instead.
- **PostgreSQL:** the role logs in with the password libpq finds (PGPASSWORD or ~/.pgpass);
  the databases are checked to be reachable before the server starts.
- **Permissions:** new users get --default-permission (READ) on what no role grants them;
  neuroflow.server.roles holds the roles, neuroflow.server.auth the rules MLflow lacks.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from neuroflow.platforms import postgres

ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"
SECRET_KEY = "MLFLOW_FLASK_SERVER_SECRET_KEY"
SECRETS = (ADMIN_PASSWORD, SECRET_KEY)
SECRETS_FILE = Path("~/.config/neuroflow/server.env")
ADMIN = "admin"
MIN_LENGTH = {ADMIN_PASSWORD: 12, SECRET_KEY: 16}
# What older MLflow releases shipped in basic_auth.ini: public, so never a password.
KNOWN_DEFAULTS = {"password1234"}
# MLflow checks the password (PBKDF2, about 0.3 s here) on every request unless it caches a
# success: 20x faster requests, against a password change or a deleted user taking up to this
# long to reach every worker.
AUTH_CACHE_S = 60
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
PROJECT = Path(__file__).resolve().parents[2]  # the checkout; its modules must import


@dataclass(frozen=True)
class Secrets:
    admin_password: str
    secret_key: str


def read_secrets(path: Path, environ=os.environ) -> Secrets:
    """The admin password and the secret key: each from the environment, else from the
    secrets file at `path`, which must lie outside the repository and be its owner's alone.
    A one-line ClickException for each way this fails."""
    values = {name: environ[name] for name in SECRETS if environ.get(name)}
    file = path.expanduser()
    if len(values) < len(SECRETS) and file.exists():
        values = {**read_secrets_file(file), **values}
    for name in SECRETS:
        if not values.get(name):
            raise click.ClickException(
                f"no {name}: expected it in the environment or in the secrets file {file} "
                f"(a line {name}=..., the file readable by its owner alone, outside the "
                "repository); there is no default"
            )
        if len(values[name]) < MIN_LENGTH[name] or values[name] in KNOWN_DEFAULTS:
            raise click.ClickException(
                f"{name} is too weak; expected at least {MIN_LENGTH[name]} characters that "
                "are not a published default"
            )
    return Secrets(values[ADMIN_PASSWORD], values[SECRET_KEY])


def read_secrets_file(file: Path) -> dict[str, str]:
    resolved = file.resolve()
    if resolved.is_relative_to(PROJECT):
        raise click.ClickException(
            f"secrets file {file} lies inside the repository {PROJECT}, where it could be "
            "committed or uploaded; expected a file outside it"
        )
    mode = resolved.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise click.ClickException(
            f"secrets file {file} has mode {stat.filemode(mode)}, which lets others read it; "
            f"expected -rw------- (chmod 600 {file})"
        )
    values = {}
    for line in resolved.read_text().splitlines():
        name, equals, value = line.strip().partition("=")
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":  # one pair of quotes
            value = value[1:-1]
        if equals and not name.startswith("#"):
            values[name.strip().removeprefix("export ").strip()] = value
    return values


def check_binding(host: str, allowed_hosts: str, tls: bool) -> None:
    """A host other than loopback exposes the server: only with --allowed-hosts, and TLS
    (passwords would cross the network in the clear)."""
    if is_loopback(host):
        return
    if not allowed_hosts:
        raise click.BadParameter(
            f"{host!r} exposes the server to the network; expected 127.0.0.1, or "
            "--allowed-hosts with the names teammates reach it by (e.g. mlflow.example.com)",
            param_hint="'--host'",
        )
    if not tls:
        raise click.BadParameter(
            f"{host!r} exposes the server without TLS, so passwords would cross the network in "
            "the clear; expected --tls-cert and --tls-key, or --tls-by-proxy behind a proxy "
            "that serves HTTPS",
            param_hint="'--host'",
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_tls(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise click.BadParameter(
            "give both --tls-cert and --tls-key, or neither", param_hint="'--tls-cert'"
        )


def check_database(database_url: str) -> None:
    """Connect once, as the server will, so that a wrong password is one line now rather than
    HTTP 500 on every request later."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    try:
        psycopg2.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database, connect_timeout=5
        ).close()
    except psycopg2.OperationalError as error:
        said = str(error).strip().splitlines()[-1] if str(error).strip() else "refused"
        raise click.ClickException(
            f"cannot reach {url.render_as_string(hide_password=True)} ({said}); expected the "
            "role's password in PGPASSWORD or ~/.pgpass, and `make postgres` run"
        ) from None


def auth_config(state: Path, auth_db: str, default_permission: str) -> Path:
    """The basic-auth app's settings file (no secret in it), written where the server keeps its
    state."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {auth_db}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = neuroflow.server.auth:authenticate\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n"
    )
    path.chmod(0o600)
    return path


def server_command(
    host, port, allowed_hosts, tracking_db, artifacts, cert, key, workers
) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"]
    command += ["--backend-store-uri", tracking_db, "--serve-artifacts"]
    command += ["--artifacts-destination", str(artifacts), "--host", host, "--port", str(port)]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    if workers:
        command += ["--workers", str(workers)]
    if cert:
        tls = f"--ssl-certfile {shlex.quote(str(cert))} --ssl-keyfile {shlex.quote(str(key))}"
        command += ["--uvicorn-opts", tls]
    return command


existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option("--port", default=5000, show_default=True)
@click.option("--allowed-hosts", default="", help="host names teammates reach the server by")
@click.option("--artifacts", type=click.Path(path_type=Path), required=True, help="their folder")
@click.option("--state", type=click.Path(path_type=Path), required=True, help="settings folder")
@click.option("--pg-port", default=postgres.PORT, show_default=True)
@click.option("--pg-user", default=postgres.USER, show_default=True)
@click.option("--tracking-db", default="mlflow", show_default=True, help="runs and registry")
@click.option("--auth-db", default="mlflow_auth", show_default=True, help="users and grants")
@click.option(
    "--default-permission",
    type=click.Choice(PERMISSIONS),
    default="READ",
    show_default=True,
    help="what a user may do where no role says",
)
@click.option("--secrets", type=click.Path(path_type=Path), default=str(SECRETS_FILE))
@click.option("--tls-cert", type=existing_file, help="PEM certificate: serve HTTPS")
@click.option("--tls-key", type=existing_file, help="its PEM private key")
@click.option("--tls-by-proxy", is_flag=True, help="a reverse proxy in front serves HTTPS")
@click.option("--workers", type=int, help="server processes (MLflow's default: 4)")
def start(
    host, port, allowed_hosts, artifacts, state, pg_port, pg_user, tracking_db, auth_db,
    default_permission, secrets, tls_cert, tls_key, tls_by_proxy, workers,
):  # fmt: skip
    """Start the team's tracking server, with authentication, in the foreground."""
    check_tls(tls_cert, tls_key)
    check_binding(host, allowed_hosts, tls=bool(tls_cert) or tls_by_proxy)
    found = read_secrets(secrets)
    tracking_url = postgres.url(tracking_db, pg_user, pg_port)
    auth_url = postgres.url(auth_db, pg_user, pg_port)
    for url in (tracking_url, auth_url):
        check_database(url)
    config = auth_config(state, auth_url, default_permission)
    artifacts.mkdir(parents=True, exist_ok=True)
    command = server_command(
        host, port, allowed_hosts, tracking_url, artifacts, tls_cert, tls_key, workers
    )
    env = {
        **os.environ,
        ADMIN_PASSWORD: found.admin_password,
        SECRET_KEY: found.secret_key,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),
    }
    scheme = "https" if tls_cert else "http"
    click.echo(f"MLflow on {scheme}://{host}:{port}, users and grants in {auth_db}", err=True)
    os.execve(sys.executable, command, env)
