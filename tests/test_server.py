"""A team's server, piece by piece in this process: PostgreSQL's password and the role
`make postgres` never changes."""

from __future__ import annotations

import click
import pytest

from neuroflow.server import postgres


def test_the_roles_password_is_libpqs_pgpassword_else_the_pgpass_file(tmp_path):
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(
        "# host:port:database:user:password\n"
        "127.0.0.1:5433:*:neuroflow:other-port\n"
        "127.0.0.1:5432:*:someone:other-user\n"
        "localhost:5432:mlflow:neuroflow:with\\:colon\n"
    )
    environ = {"PGPASSFILE": str(pgpass)}
    assert postgres.password_for("neuroflow", 5432, environ) == "with:colon"
    assert postgres.password_for("neuroflow", 5433, environ) == "other-port"
    assert postgres.password_for("nobody", 5432, environ) is None
    assert postgres.password_for("neuroflow", 5432, {**environ, "PGPASSWORD": "env"}) == "env"
    assert postgres.password_for("neuroflow", 5432, {"PGPASSFILE": str(tmp_path / "no")}) is None


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


def test_make_postgres_creates_a_missing_role_with_the_password_on_stdin_only(monkeypatch):
    cluster = FakeCluster(set())
    monkeypatch.setattr(postgres, "run", cluster)
    assert postgres.create("neuroflow", ("mlflow",), 5432, "it's-secret") is True
    (created,) = [(c, i) for c, i in cluster.calls if "CREATE ROLE" in i]
    assert "PASSWORD 'it''s-secret'" in created[1]
    assert not any("secret" in " ".join(command) for command, _ in cluster.calls)


def test_a_missing_role_without_a_password_is_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(postgres, "run", FakeCluster(set()))
    with pytest.raises(click.ClickException, match="no password for it was given") as refused:
        postgres.create("neuroflow", ("mlflow",), 5432, None)
    assert "PGPASSWORD or in ~/.pgpass" in refused.value.format_message()
