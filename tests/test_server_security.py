"""A team's tracking server, tried as an attacker on the same network would: a real `make server`
(MLflow with its basic-auth app, PostgreSQL, proxied artifacts), served over TLS with a
self-signed certificate that every client trusts through MLFLOW_TRACKING_SERVER_CERT_PATH.

Its role and databases are throwaway ones made by `make postgres`; the admin password and the
server's secret key come from a secrets file. Every probe prints who asked what and what the
server answered, so the CI log records each result. The tests share the server and run in the
order written: the swapped-file tests need version 1 not to be champion yet, so that promote
loads it; the releaser's promotion comes after them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import io
import ipaddress
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from helpers import ROOT, free_port, mlflow_run, registry_bytes, step_in_process

pytestmark = pytest.mark.slow
VENV = Path(sys.executable).parent.parent  # the nested `make` uses this environment
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MODEL = "digits_mlp"  # what the pipeline registers as, from `-P models=mlp`


@dataclass
class Team:
    url: str
    cert: Path  # the server's self-signed certificate, which clients trust
    folder: Path
    make_vars: list[str]
    passwords: dict[str, str]  # user: password, admin included
    pg_password: str
    log: Path
    run_ids: dict[str, str] = field(default_factory=dict)

    def credentials(self, user: str) -> dict[str, str]:
        """What a teammate exports, besides MLFLOW_TRACKING_URI, to work as `user`."""
        return {
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": self.passwords[user],
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(self.cert),
        }

    def env(self, user: str) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.url, **self.credentials(user)}

    def probe(self, who: str | None, method: str, path: str, **request) -> int:
        auth = (who, self.passwords[who]) if who else None
        response = requests.request(
            method, self.url + path, auth=auth, verify=self.cert, timeout=60, **request
        )
        print(f"{who or 'anonymous'}: {method} {path} -> {response.status_code}")
        return response.status_code

    @contextlib.contextmanager
    def acting_as(self, user: str):
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env(user).items():
                patch.setenv(name, value)
            yield


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, signed by its own key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, key_file = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert, key_file


def make(target: str, variables: list[str], env: dict, **popen):
    return subprocess.run(
        ["make", "--no-print-directory", target, f"VENV={VENV}", *variables],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **popen,
    )


def private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def team(postgres_role, tmp_path_factory) -> Team:
    """`make postgres` and `make server` with a throwaway role and databases, TLS on, job
    execution and extra workers off (only to spare 2 cores); an admin, and a reader, a trainer
    and a releaser added with `python -m neuroflow.server users add`."""
    from neuroflow.platforms import postgres as pg

    folder = tmp_path_factory.mktemp("team")
    folder.chmod(0o700)
    user = f"sec_{os.getpid()}"
    databases = [f"{user}_{name}" for name in ("runs", "users", "studies")]
    port = free_port()
    cert, key = self_signed(folder)
    passwords = {name: secrets.token_urlsafe(16) for name in ("admin", "rita", "tina", "lena")}
    secrets_file = private_file(
        folder / "server.env",
        f"MLFLOW_AUTH_ADMIN_PASSWORD={passwords['admin']}\n"
        f"MLFLOW_FLASK_SERVER_SECRET_KEY={secrets.token_hex(32)}\n",
    )
    variables = [
        f"PG_USER={user}",
        f"PG_TRACKING_DB={databases[0]}",
        f"PG_AUTH_DB={databases[1]}",
        f"PG_STUDIES_DB={databases[2]}",
        f"SERVER_PORT={port}",
        f"SERVER_SECRETS={secrets_file}",
        f"STORE={folder / 'store'}",
        f"TLS_CERT={cert}",
        f"TLS_KEY={key}",
        "SERVER_WORKERS=1",
    ]
    pg_password = secrets.token_urlsafe(16)
    env = {**os.environ, "PGPASSWORD": pg_password, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    made = make("postgres", variables, env)
    assert made.returncode == 0, made.stderr
    log = folder / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            ["make", "--no-print-directory", "server", f"VENV={VENV}", *variables],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make, the launcher, mlflow and uvicorn: one group to stop
        )
    team = Team(f"https://127.0.0.1:{port}", cert, folder, variables, passwords, pg_password, log)
    try:
        wait_until_up(team, server)
        add_users(team)
        yield team
    finally:
        stop(server)
        pg.drop(user, databases, pg.PORT)


def stop(server: subprocess.Popen) -> None:
    """Stop make and everything it started: 5 s to close connections, then killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


def wait_until_up(team: Team, server: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{team.url}/health", verify=team.cert, timeout=5).ok:
                return
        if server.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(team.log.read_text()[-3000:])
        time.sleep(1)


def add_users(team: Team) -> None:
    """The three roles, added at once through the real command, each password in a file."""
    roles = {"rita": "reader", "tina": "trainer", "lena": "releaser"}
    env = {**os.environ, **team.env("admin")}
    adds = []
    for user, role in roles.items():
        password_file = private_file(team.folder / f"{user}.password", team.passwords[user])
        command = [sys.executable, "-m", "neuroflow.server", "users", "add", user]
        command += ["--role", role, "--password-file", str(password_file)]
        adds.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True))
    for added in adds:
        output, _ = added.communicate(timeout=120)
        assert added.returncode == 0, output
        print(output.strip())


@pytest.fixture(scope="module")
def pipeline(team, tmp_path_factory):
    """`mlflow run . -P models=mlp` as the trainer, with every process's command line watched
    while it runs: (its result, the command lines seen)."""
    folder = tmp_path_factory.mktemp("trainer")
    seen: set[str] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    seen.add(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = mlflow_run("main", folder, team.url, env=team.credentials("tina"), models="mlp")
    finally:
        done.set()
        watcher.join()
    return result, seen


def test_anonymous_requests_to_every_endpoint_family_are_refused(team):
    families = [
        ("GET", f"{API}/experiments/search?max_results=1", {}),
        ("POST", f"{API}/experiments/create", {"json": {"name": "anonymous"}}),
        ("POST", f"{API}/runs/create", {"json": {"experiment_id": "0"}}),
        ("POST", f"{API}/runs/log-batch", {"json": {"run_id": "0" * 32, "metrics": []}}),
        ("POST", f"{API}/runs/delete", {"json": {"run_id": "0" * 32}}),
        ("POST", f"{API}/logged-models/search", {"json": {"experiment_ids": ["0"]}}),
        ("GET", f"{API}/registered-models/search", {}),
        ("POST", f"{API}/registered-models/create", {"json": {"name": "anonymous"}}),
        ("DELETE", f"{API}/registered-models/delete", {"json": {"name": MODEL}}),
        ("POST", f"{API}/model-versions/create", {"json": {"name": MODEL, "source": "x"}}),
        ("POST", f"{API}/registered-models/alias", {"json": {"name": MODEL, "alias": "champion"}}),
        ("GET", f"{ARTIFACTS}?path=0", {}),
        ("GET", f"{ARTIFACTS}/0/anything.txt", {}),
        ("PUT", f"{ARTIFACTS}/0/anything.txt", {"data": b"x"}),
        ("DELETE", f"{ARTIFACTS}/0/anything.txt", {}),
        ("POST", f"{API}/users/create", {"json": {"username": "eve", "password": "x" * 16}}),
        ("GET", f"{API}/users/get?username=admin", {}),
        ("POST", "/graphql", {"json": {"query": "{ __typename }"}}),
        ("GET", "/ajax-api/2.0/mlflow/experiments/search?max_results=1", {}),
        ("GET", "/", {}),
    ]
    answers = {
        (method, path): team.probe(None, method, path, **body) for method, path, body in families
    }
    assert set(answers.values()) == {401}, answers


def test_mlflows_old_default_admin_password_and_a_wrong_one_are_refused(team):
    for password in ("password1234", "wrong-" + team.passwords["admin"]):
        response = requests.get(
            f"{team.url}{API}/experiments/search?max_results=1",
            auth=("admin", password),
            verify=team.cert,
            timeout=30,
        )
        print(f"admin with a wrong password: GET experiments/search -> {response.status_code}")
        assert response.status_code == 401
    assert team.probe("admin", "GET", f"{API}/experiments/search?max_results=1") == 200


def test_the_server_speaks_only_tls_with_its_certificate(team):
    http_url = team.url.replace("https://", "http://")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{http_url}/health", timeout=10)
    with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust it
        requests.get(f"{team.url}/health", timeout=10)
    print("plain http and an untrusting https client: refused")


def test_a_host_header_outside_the_allowed_list_is_refused(team):
    headers = {"Host": "mlflow.attacker.example"}
    path = f"{API}/experiments/search?max_results=1"
    assert team.probe("admin", "GET", path, headers=headers) == 403


def test_an_exposed_server_needs_allowed_hosts_and_tls_or_refuses_to_start(team):
    variables = [*team.make_vars, "SERVER_HOST=0.0.0.0", "SERVER_PORT=1"]
    env = {**os.environ, "PGPASSWORD": team.pg_password}
    refused = make("server", variables, env)
    lines = [line for line in refused.stderr.splitlines() if "error" in line.lower()]
    print(f"make server SERVER_HOST=0.0.0.0 without ALLOWED_HOSTS: {lines[0]}")
    assert refused.returncode != 0 and "'0.0.0.0' exposes the server" in lines[0]
    assert "--allowed-hosts" in lines[0]
    clear = [*variables, "ALLOWED_HOSTS=mlflow.example.com", "TLS_CERT=", "TLS_KEY="]
    refused = make("server", clear, env)
    lines = [line for line in refused.stderr.splitlines() if "error" in line.lower()]
    print(f"make server SERVER_HOST=0.0.0.0 ALLOWED_HOSTS=... without TLS: {lines[0]}")
    assert refused.returncode != 0 and "without TLS, so passwords would cross" in lines[0]


def test_the_server_refuses_to_start_without_its_secrets(team, tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
    }
    env["PGPASSWORD"] = team.pg_password
    variables = [*team.make_vars, f"SERVER_SECRETS={tmp_path / 'none.env'}", "SERVER_PORT=1"]
    refused = make("server", variables, env)
    said = [line for line in refused.stderr.splitlines() if "MLFLOW_AUTH_ADMIN_PASSWORD" in line]
    print(f"make server without secrets: {said[0] if said else refused.stderr[-300:]}")
    assert refused.returncode != 0 and said and "there is no default" in said[0]


def test_path_traversal_on_the_artifact_proxy_is_refused(team):
    """A trainer is stopped by the auth layer, which cannot place the path in an experiment
    (403); an admin, whom MLflow lets past the permission checks, by the proxy's own check of
    the path (400)."""
    context = ssl.create_default_context(cafile=str(team.cert))
    host, port = team.url.removeprefix("https://").split(":")
    expected = {"tina": {403}, "admin": {400}}
    for user, statuses in expected.items():
        token = base64.b64encode(f"{user}:{team.passwords[user]}".encode()).decode()
        for path in ("../../../etc/passwd", "0/..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd"):
            for method in ("GET", "PUT"):
                connection = http.client.HTTPSConnection(host, int(port), context=context)
                # http.client sends the path as written: no client-side clean-up of the dots
                body = b"x" if method == "PUT" else None
                headers = {"Authorization": f"Basic {token}"}
                connection.request(method, f"{ARTIFACTS}/{path}", body=body, headers=headers)
                status = connection.getresponse().status
                connection.close()
                print(f"{user}: {method} {ARTIFACTS}/{path} -> {status}")
                assert status in statuses, (user, method, path)


def test_the_pipeline_runs_as_a_trainer_and_its_promote_is_refused_at_the_champion(team, pipeline):
    import mlflow

    result, _ = pipeline
    errors = result.error_lines()
    print(f"main as tina: exit {result.returncode}; {errors}")
    assert result.returncode != 0
    assert errors[0].startswith("promote: error: the tracking server refused user 'tina' (403)")
    needs = "needs the 'releaser' role (MANAGE on registered models)"
    assert f"moving alias 'champion' of registered model 'digits_mlp' {needs}" in errors[0]
    client = mlflow.MlflowClient(team.url)
    with team.acting_as("tina"):
        runs = {
            run.data.tags.get("step"): run
            for run in client.search_runs(["0"], max_results=100)
            if "step" in run.data.tags
        }
        assert {step: runs[step].info.status for step in runs} == {
            "preprocess": "FINISHED",
            "train_mlp": "FINISHED",
            "register": "FINISHED",
            "promote": "FAILED",
            "main": "FAILED",
        }
        version = client.get_model_version(MODEL, "1")
        assert version.aliases == ["challenger"]  # champion never moved
        assert "promotion" not in version.tags  # and the version was left as register left it
    team.run_ids.update({step: run.info.run_id for step, run in runs.items()})


def test_credentials_are_in_no_param_tag_artifact_log_or_command_line(team, pipeline, tmp_path):
    import mlflow

    result, command_lines = pipeline
    password = team.passwords["tina"]
    assert command_lines and not [line for line in command_lines if password in line]
    assert password not in result.stderr
    assert password not in team.log.read_text()
    client = mlflow.MlflowClient(team.url)
    with team.acting_as("admin"):
        runs = client.search_runs(["0"], max_results=100)
        recorded = [(run.data.params, run.data.tags) for run in runs]
        versions = client.search_model_versions(f"name = '{MODEL}'")
        recorded += [(version.tags, version.description) for version in versions]
        assert password not in repr(recorded)
        files = 0
        for run in runs:
            folder = tmp_path / run.info.run_id
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="", dst_path=str(folder / "run")
            )
            if "model_uri" in run.data.tags:  # a logged model keeps its files apart
                mlflow.artifacts.download_artifacts(
                    run.data.tags["model_uri"], dst_path=str(folder / "model")
                )
            for path in folder.rglob("*"):
                if path.is_file():
                    files += 1
                    assert password.encode() not in path.read_bytes(), path
    print(
        f"tina's password in none of {len(command_lines)} command lines, {len(runs)} runs' "
        f"params and tags, {len(versions)} versions, {files} artifact files, or the logs"
    )


def test_a_reader_cannot_write_register_move_an_alias_or_delete(team, pipeline):
    train_run = team.run_ids["train_mlp"]
    writes = [
        ("POST", f"{API}/runs/log-metric", {"json": {"run_id": train_run, "key": "x", "value": 1, "timestamp": 0}}),  # noqa: E501
        ("POST", f"{API}/runs/set-tag", {"json": {"run_id": train_run, "key": "x", "value": "y"}}),
        ("POST", f"{API}/runs/create", {"json": {"experiment_id": "0"}}),
        ("POST", f"{API}/experiments/create", {"json": {"name": "readers-own"}}),
        ("POST", f"{API}/registered-models/create", {"json": {"name": "readers_own"}}),
        ("POST", f"{API}/model-versions/create", {"json": {"name": MODEL, "source": f"runs:/{train_run}/model", "run_id": train_run}}),  # noqa: E501
        ("POST", f"{API}/registered-models/alias", {"json": {"name": MODEL, "alias": "champion", "version": "1"}}),  # noqa: E501
        ("POST", f"{API}/registered-models/alias", {"json": {"name": MODEL, "alias": "challenger", "version": "1"}}),  # noqa: E501
        ("DELETE", f"{API}/registered-models/alias", {"json": {"name": MODEL, "alias": "challenger"}}),  # noqa: E501
        ("DELETE", f"{API}/model-versions/delete", {"json": {"name": MODEL, "version": "1"}}),
        ("DELETE", f"{API}/registered-models/delete", {"json": {"name": MODEL}}),
        ("POST", f"{API}/runs/delete", {"json": {"run_id": train_run}}),
        ("POST", f"{API}/experiments/delete", {"json": {"experiment_id": "0"}}),
        ("PUT", f"{ARTIFACTS}/0/{train_run}/artifacts/planted.txt", {"data": b"x"}),
        ("DELETE", f"{ARTIFACTS}/0/{train_run}/artifacts/model_files.sha256", {}),
    ]  # fmt: skip
    reads = [
        ("GET", f"{API}/runs/get?run_id={train_run}", {}),
        ("GET", f"{API}/registered-models/get?name={MODEL}", {}),
        ("GET", f"{ARTIFACTS}/0/{train_run}/artifacts/model_files.sha256", {}),
    ]
    refused = {(m, p): team.probe("rita", m, p, **body) for m, p, body in writes}
    assert set(refused.values()) == {403}, refused
    assert {team.probe("rita", m, p, **body) for m, p, body in reads} == {200}


SWAPS = ["model_code.py", "artifacts/network/weights.pt"]


@pytest.mark.parametrize("path", SWAPS)
def test_a_model_file_swapped_through_the_proxy_is_refused_by_promote_and_predict(
    team, pipeline, path
):
    """A trainer may write the experiment's artifacts, so may swap a file of a registered
    version through the artifact proxy: promote and predict refuse the version at load, with
    one line naming the file, and change nothing."""
    import mlflow
    import torch

    with team.acting_as("admin"):
        client = mlflow.MlflowClient(team.url)
        source = client.get_model_version(MODEL, "1").source
        location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
        original = mlflow.artifacts.download_artifacts(f"{location}/{path}")
    data = Path(original).read_bytes()
    if path.endswith(".pt"):
        weights = torch.load(io.BytesIO(data), weights_only=True)
        swapped = io.BytesIO()
        torch.save({key: torch.zeros_like(value) for key, value in weights.items()}, swapped)
        swapped = swapped.getvalue()
    else:
        swapped = f"open({str(team.folder / 'pwned')!r}, 'w')\n".encode() + data
    proxied = f"{ARTIFACTS}/{location.removeprefix('mlflow-artifacts:/')}/{path}"
    assert team.probe("tina", "PUT", proxied, data=swapped) == 200
    try:
        # nor may she record the swap as the version's own: its digests are written once
        tag = {"name": MODEL, "version": "1", "key": "model_digest", "value": "0" * 64}
        assert team.probe("tina", "POST", f"{API}/model-versions/set-tag", json=tag) == 403
        lineage = {**tag, "key": "data_run_id", "value": "0" * 32}
        assert team.probe("tina", "POST", f"{API}/model-versions/set-tag", json=lineage) == 403
        delete = {"name": MODEL, "version": "1", "key": "model_manifest"}
        assert team.probe("tina", "DELETE", f"{API}/model-versions/delete-tag", json=delete) == 403
        other = {**tag, "key": "reviewed_by", "value": "tina"}  # other tags stay a trainer's to set
        assert team.probe("tina", "POST", f"{API}/model-versions/set-tag", json=other) == 200
        with team.acting_as("admin"):
            before = registry_bytes(mlflow.MlflowClient(team.url))
        prepared = team.run_ids["preprocess"]
        for step, user, params in (
            ("promote", "lena", {"model_name": MODEL, "candidate": "1"}),
            ("predict", "tina", {"model": f"models:/{MODEL}/1", "data": prepared}),
        ):
            with team.acting_as(user):
                result = step_in_process(step, team.url, **params)
                status = mlflow.MlflowClient(team.url).get_run(result.run_id).info.status
            lines = result.stderr.strip().splitlines()
            print(f"{step} as {user} of a version with a swapped {path}: {lines}")
            assert result.returncode != 0 and len(lines) == 1 and status == "FAILED"
            assert f"its file {path} changed since it was registered as version 1" in lines[0]
        with team.acting_as("admin"):
            assert registry_bytes(mlflow.MlflowClient(team.url)) == before
    finally:
        assert team.probe("admin", "PUT", proxied, data=data) == 200  # put back
    assert not (team.folder / "pwned").exists(), "the swapped model_code.py was imported"


def test_a_trainer_moving_champion_is_refused_and_a_releaser_promotes(team, pipeline, tmp_path):
    alias = {"name": MODEL, "alias": "champion", "version": "1"}
    assert team.probe("tina", "POST", f"{API}/registered-models/alias", json=alias) == 403
    assert team.probe("tina", "DELETE", f"{API}/registered-models/alias", json=alias) == 403
    stage = {"name": MODEL, "version": "1", "stage": "Production"}
    path = f"{API}/model-versions/transition-stage"
    assert (
        team.probe("tina", "POST", path, json={**stage, "archive_existing_versions": False}) == 403
    )
    # as MLflow's handler reads it: the body, whatever its content type; the query string too
    body = json.dumps(alias).encode()
    plain = {"Content-Type": "text/plain"}
    for method, params in (("DELETE", {"name": MODEL, "alias": "challenger"}), ("POST", {})):
        path = f"{API}/registered-models/alias"
        assert team.probe("tina", method, path, params=params, data=body, headers=plain) == 403
    removals = [
        ("POST", f"{API}/registered-models/rename", {"name": MODEL, "new_name": "elsewhere"}),
        ("DELETE", f"{API}/model-versions/delete", {"name": MODEL, "version": "1"}),
        ("DELETE", f"{API}/registered-models/delete", {"name": MODEL}),
    ]
    assert {team.probe("tina", m, path, json=asked) for m, path, asked in removals} == {403}
    promoted = mlflow_run(
        "promote", tmp_path, team.url, env=team.credentials("lena"), model_name=MODEL
    )
    print(f"promote as lena: exit {promoted.returncode}")
    assert promoted.returncode == 0, promoted.stderr
    import mlflow

    with team.acting_as("lena"):
        version = mlflow.MlflowClient(team.url).get_model_version_by_alias(MODEL, "champion")
    assert version.version == "1" and version.tags["promotion"] == "promoted"


def test_make_postgres_twice_beside_the_live_server_keeps_it_answering(team):
    """Run as a teammate might, with another password in the environment: the role that exists
    keeps the password the server logs in with."""
    env = {**os.environ, "PGPASSWORD": secrets.token_urlsafe(16)}
    for attempt in (1, 2):
        made = make("postgres", team.make_vars, env)
        print(f"make postgres, time {attempt}: exit {made.returncode}, {made.stderr.strip()!r}")
        assert made.returncode == 0 and "left as it is" in made.stderr
        assert team.probe("tina", "GET", f"{API}/experiments/search?max_results=5") == 200
