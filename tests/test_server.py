"""A team's server, piece by piece in this process: the secrets it will not start without, the
binding and TLS checks, PostgreSQL's password and the role `make postgres` never changes, the
roles, and the one line a step ends with when the server refuses it. The real server, attacked,
is tests/test_server_security.py."""

from __future__ import annotations

import click
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

from neuroflow import cli
from neuroflow.platforms import postgres
from neuroflow.server import launch, users
from neuroflow.server.roles import CREATORS, RELEASED_ALIASES, RELEASER, ROLES
from neuroflow.tracking.registry import CHAMPION

ADMIN, KEY = launch.ADMIN_PASSWORD, launch.SECRET_KEY
STRONG = {ADMIN: "correct-horse-battery", KEY: "0123456789abcdef0123"}


def secrets_file(folder, text: str, mode: int = 0o600):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "server.env"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_secrets_come_from_the_environment_or_a_private_file_outside_the_repository(tmp_path):
    file = secrets_file(
        tmp_path, f"# the team's\nexport {ADMIN}='{STRONG[ADMIN]}'\n{KEY}=\"quo'te-key-0123456\"\n"
    )
    from_file = launch.read_secrets(file, environ={})
    assert from_file == launch.Secrets(STRONG[ADMIN], "quo'te-key-0123456")  # quotes off
    assert launch.read_secrets(tmp_path / "none.env", environ=STRONG).secret_key == STRONG[KEY]
    mixed = launch.read_secrets(file, environ={KEY: STRONG[KEY]})  # the environment first
    assert mixed == launch.Secrets(STRONG[ADMIN], STRONG[KEY])


@pytest.mark.parametrize(
    ("environ", "text", "mode", "message"),
    [
        ({}, "", 0o600, f"no {ADMIN}: expected it in the environment or in the secrets file"),
        ({ADMIN: STRONG[ADMIN]}, "", 0o600, f"no {KEY}:"),
        ({**STRONG, ADMIN: "password1234"}, "", 0o600, f"{ADMIN} is too weak"),
        ({**STRONG, KEY: "short"}, "", 0o600, f"{KEY} is too weak; expected at least 16"),
        ({}, f"{ADMIN}={STRONG[ADMIN]}\n{KEY}={STRONG[KEY]}\n", 0o644, "lets others read it"),
    ],
)
def test_the_server_will_not_start_without_strong_private_secrets(
    tmp_path, environ, text, mode, message
):
    file = secrets_file(tmp_path, text, mode)
    with pytest.raises(click.ClickException, match=message) as refused:
        launch.read_secrets(file, environ=environ)
    assert "\n" not in refused.value.format_message()
    assert STRONG[ADMIN] not in refused.value.format_message()


def test_a_secrets_file_inside_the_repository_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "PROJECT", tmp_path)
    file = secrets_file(tmp_path / "config", f"{ADMIN}={STRONG[ADMIN]}\n{KEY}={STRONG[KEY]}\n")
    with pytest.raises(click.ClickException, match="lies inside the repository"):
        launch.read_secrets(file, environ={})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_allowed_hosts_nor_tls(host):
    launch.check_binding(host, "", tls=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "mlflow.example.com"])
def test_another_host_exposes_the_server_only_with_allowed_hosts_and_tls(host):
    with pytest.raises(click.BadParameter, match=f"'{host}' exposes the server to the network"):
        launch.check_binding(host, "", tls=True)
    with pytest.raises(click.BadParameter, match="without TLS, so passwords would cross"):
        launch.check_binding(host, "mlflow.example.com", tls=False)
    launch.check_binding(host, "mlflow.example.com", tls=True)


def test_tls_takes_a_certificate_and_its_key_together(tmp_path):
    launch.check_tls(None, None)
    launch.check_tls(tmp_path / "c.pem", tmp_path / "k.pem")
    with pytest.raises(click.BadParameter, match="both --tls-cert and --tls-key"):
        launch.check_tls(tmp_path / "c.pem", None)


def test_the_auth_settings_hold_no_secret_and_only_their_owner_reads_them(tmp_path):
    url = postgres.url("mlflow_auth")
    path = launch.auth_config(tmp_path / "state", url, "NO_PERMISSIONS")
    text = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    assert "default_permission = NO_PERMISSIONS" in text and f"database_uri = {url}" in text
    assert "authorization_function = neuroflow.server.auth:authenticate" in text
    assert "password" not in text.replace("admin_username", "")


def test_the_servers_command_line_carries_no_secret_and_tls_goes_to_uvicorn(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    command = launch.server_command(
        "0.0.0.0", 5000, "mlflow.example.com", postgres.url("mlflow"), tmp_path, cert, key, 2
    )
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--allowed-hosts") + 1] == "mlflow.example.com"
    assert command[command.index("--uvicorn-opts") + 1] == (
        f"--ssl-certfile {cert} --ssl-keyfile {key}"
    )
    assert not any(secret in " ".join(command) for secret in STRONG.values())
    assert "@127.0.0.1" in command[command.index("--backend-store-uri") + 1]  # no password


def test_the_roles_password_is_libpqs_pgpassword_else_the_pgpass_file(tmp_path):
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(
        "# host:port:database:user:password\n"
        "localhost:5432:*:neuroflow:a-socket-line\n"  # libpq: Unix-socket connections only
        "127.0.0.1:5432:mlflow:neuroflow:one-database\n"  # not every database
        "127.0.0.1:5433:*:neuroflow:other-port\n"
        "127.0.0.1:5432:*:someone:other-user\n"
        "127.0.0.1:*:*:neuroflow:with\\:colon\n"
    )
    pgpass.chmod(0o600)
    environ = {"PGPASSFILE": str(pgpass)}
    assert postgres.password_for("neuroflow", 5432, environ) == "with:colon"
    assert postgres.password_for("neuroflow", 5433, environ) == "other-port"
    assert postgres.password_for("nobody", 5432, environ) is None
    assert postgres.password_for("neuroflow", 5432, {**environ, "PGPASSWORD": "env"}) == "env"
    assert postgres.password_for("neuroflow", 5432, {"PGPASSFILE": str(tmp_path / "no")}) is None
    pgpass.chmod(0o644)
    with pytest.raises(click.ClickException, match="so libpq ignores it; expected -rw-------"):
        postgres.password_for("neuroflow", 5432, environ)


def test_a_role_is_created_with_a_scram_verifier_of_its_password():
    salt = bytes(range(16))
    verifier = postgres.scram_verifier("pencil", salt)
    assert verifier.startswith("SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$")
    assert verifier == postgres.scram_verifier("pencil", salt)  # a function of password and salt
    assert verifier != postgres.scram_verifier("pencil2", salt) and "pencil" not in verifier


class FakeCluster:
    """postgres.run, with the roles that exist: records each command and what it read on stdin."""

    def __init__(self, roles: set[str]):
        self.roles, self.calls = roles, []

    def __call__(self, command, as_postgres=False, input="", **options):
        self.calls.append((command, input))
        if "FROM pg_roles" in input:
            return "1\n" if any(f"'{role}'" in input for role in self.roles) else "\n"
        return ""


def test_make_postgres_never_changes_a_role_that_exists(monkeypatch):
    cluster = FakeCluster({"neuroflow"})
    monkeypatch.setattr(postgres, "run", cluster)
    made = postgres.create("neuroflow", ("mlflow", "optuna"), 5432, "a-new-password")
    scripts = " ".join(script for _, script in cluster.calls)
    assert made is False
    assert "ROLE neuroflow" not in scripts and "a-new-password" not in scripts
    assert "CREATE DATABASE mlflow OWNER neuroflow" in scripts


def test_make_postgres_creates_a_missing_role_sending_no_password_at_all(monkeypatch):
    cluster = FakeCluster(set())
    monkeypatch.setattr(postgres, "run", cluster)
    assert postgres.create("neuroflow", ("mlflow",), 5432, "it's-secret") is True
    (created,) = [script for _, script in cluster.calls if "CREATE ROLE" in script]
    assert "PASSWORD 'SCRAM-SHA-256$4096:" in created
    assert not any("secret" in " ".join(command) + script for command, script in cluster.calls)


def test_a_missing_role_without_a_password_is_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(postgres, "run", FakeCluster(set()))
    with pytest.raises(click.ClickException, match="no password for it was given") as refused:
        postgres.create("neuroflow", ("mlflow",), 5432, None)
    assert "PGPASSWORD or in ~/.pgpass" in refused.value.format_message()


def test_the_roles_grant_real_permissions_and_only_a_releaser_releases():
    permissions = set(launch.PERMISSIONS) - {"NO_PERMISSIONS"}
    for _, grants in ROLES.values():
        assert set(grants) == {"experiment", "registered_model"}
        assert set(grants.values()) <= permissions
    assert ROLES[RELEASER][1]["registered_model"] == "MANAGE"
    assert all(
        grants["registered_model"] != "MANAGE"
        for role, (_, grants) in ROLES.items()
        if role != RELEASER
    )
    assert {CHAMPION} == RELEASED_ALIASES and set(ROLES) > CREATORS


@pytest.mark.parametrize(
    ("code", "said", "expected"),
    [
        (
            "PERMISSION_DENIED",
            "PERMISSION_DENIED: moving alias 'champion' needs MANAGE",
            "(403): moving alias 'champion' needs MANAGE; expected a user whose role",
        ),
        (
            "UNAUTHENTICATED",
            "API request to /runs/create failed with error code 401",
            "(401): API request",
        ),
    ],
)
def test_a_step_the_server_refuses_ends_with_one_line_naming_the_user(
    monkeypatch, code, said, expected
):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    line = cli.tracking_refused(MlflowException(said, getattr(databricks_pb2, code)))
    assert line.startswith("the tracking server refused user 'alice' ") and expected in line
    gone = MlflowException("gone", databricks_pb2.RESOURCE_DOES_NOT_EXIST)
    assert cli.tracking_refused(gone) is None


def test_a_new_users_password_comes_from_a_file_and_is_long_enough(tmp_path):
    (tmp_path / "ok").write_text("a-long-enough-one\nignored\n")
    assert users.read_password(tmp_path / "ok", "alice") == "a-long-enough-one"
    (tmp_path / "short").write_text("short\n")
    with pytest.raises(click.BadParameter, match="has 5 characters; expected at least 12"):
        users.read_password(tmp_path / "short", "alice")
