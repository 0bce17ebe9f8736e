"""The Databricks backend, proven against a loopback workspace (tests/databricks_loopback.py)
and a real `mlflow server` behind it; and the submit command's checks, which run before
anything is uploaded."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from databricks_loopback import Workspace
from helpers import ROOT, project_snapshot, python_env
from neuroflow.envs import read_pins

TOKEN = "dapi-loopback-secret-0123456789"
CLUSTER = json.loads((ROOT / "databricks" / "cluster-cpu.json").read_text())


EXPERIMENT = "/Users/tests/neuroflow"  # a workspace path, as on Databricks


@pytest.fixture(scope="module")
def workspace(server, tmp_path_factory):
    """A loopback workspace in front of the shared `mlflow server`."""
    loopback = Workspace(
        tmp_path_factory.mktemp("workspace") / "cluster",
        server,
        job_env=python_env(DATABRICKS_TOKEN=TOKEN),
    )
    loopback.start()
    yield loopback
    loopback.stop()


def experiment_id(workspace: Workspace) -> str:
    return MlflowClient(tracking_uri=workspace.url).get_experiment_by_name(EXPERIMENT).experiment_id


def client_env(workspace: Workspace) -> dict:
    return python_env(
        DATABRICKS_HOST=workspace.url, DATABRICKS_TOKEN=TOKEN, MLFLOW_TRACKING_URI=workspace.url
    )


@pytest.mark.slow
def test_mlflow_run_on_databricks_trains_on_the_cluster(workspace, tmp_path):
    project = tmp_path / "clone"
    snapshot = project_snapshot(tmp_path / "snapshot")
    subprocess.run(["git", "clone", "-q", "--depth=1", snapshot.as_uri(), str(project)], check=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(project),
            "-b",
            "databricks",
            "--backend-config",
            str(ROOT / "databricks" / "cluster-cpu.json"),
            "-e",
            "train_mlp",
            "--experiment-name",
            EXPERIMENT,
            "--env-manager",
            "local",
            "-P",
            "epochs=2",
            "-P",
            "max_batches=5",
        ],
        cwd=tmp_path,
        env=client_env(workspace),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    job = workspace.jobs[len(workspace.jobs)]
    job.wait(timeout=900)  # `mlflow run -b databricks` returns once the job is submitted
    assert job.result_state == "SUCCESS", job.log.read_text()

    payload = job.payload
    assert payload["new_cluster"] == CLUSTER["new_cluster"]
    libraries = [lib["pypi"]["package"] for lib in payload["libraries"]]
    _, pins = read_pins()
    assert set(libraries) == set(pins)  # the cluster's pins, and MLflow's own

    client = MlflowClient(tracking_uri=workspace.url)
    (run,) = client.search_runs([experiment_id(workspace)], "tags.step = 'train_mlp'")
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2
    assert 0 < run.data.metrics["test_accuracy"] <= 1
    assert run.data.tags["model_uri"].startswith("models:/")
    assert run.data.tags["git_commit"] == run.data.tags["mlflow.source.git.commit"]

    (tarball,) = [p for p in workspace.uploads() if p.name.endswith(".tar.gz")]
    assert tarball.stat().st_size < 2_000_000
    with tarfile.open(tarball) as archive:
        uploaded = {
            m.name.removeprefix("mlflow-project/") for m in archive.getmembers() if m.isfile()
        }
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.split()
    assert {name for name in uploaded if not name.startswith(".git/")} == set(tracked)

    assert_token_nowhere(client, workspace, tmp_path)


def assert_token_nowhere(client: MlflowClient, workspace: Workspace, folder: Path) -> None:
    """DATABRICKS_TOKEN is in the client's and the cluster's environment, and must not be in
    any param, tag or artifact, nor sent anywhere but an Authorization header."""
    experiment = experiment_id(workspace)
    for run in client.search_runs([experiment]):
        values = [*run.data.params.values(), *run.data.tags.values()]
        assert not any(TOKEN in value for value in values), run.info.run_id
        local = client.download_artifacts(run.info.run_id, "", str(folder / run.info.run_id))
        for path in Path(local).rglob("*"):
            assert not (path.is_file() and TOKEN.encode() in path.read_bytes()), path
    for model in client.search_logged_models([experiment]):
        assert not any(TOKEN in str(v) for v in {**model.params, **model.tags}.values())


def submit(workspace: Workspace, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "neuroflow.databricks", *args],
        cwd=cwd,
        env=client_env(workspace),
        capture_output=True,
        text=True,
        timeout=600,
    )


def refused(workspace: Workspace, *args: str) -> tuple[int, str]:
    """`python -m neuroflow.databricks args...` run in this process, with the client's
    environment, as the command runs it: (exit code, stderr)."""
    from neuroflow import cli, databricks

    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "MLFLOW_TRACKING_URI"):
            patch.setenv(name, client_env(workspace)[name])
        patch.setattr(sys, "argv", ["databricks", *args])
        with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit:
            cli.run(databricks.submit)
    return exit.value.code, stderr.getvalue()


@pytest.fixture
def idle_workspace(tmp_path):
    """A workspace nothing should reach: it counts the requests it gets."""
    loopback = Workspace(tmp_path / "idle", "http://127.0.0.1:9")
    loopback.start()
    yield loopback
    loopback.stop()


BAD_CONFIGS = [
    ('{"new_cluster": {"spark_version": ', "is not valid JSON"),
    ('{"existing_cluster_id": "0123-456789-abc"}', "names an existing_cluster_id"),
    ('{"new_cluster": {"existing_cluster_id": "0123"}}', "names an existing_cluster_id"),
    ('{"libraries": []}', "has no new_cluster object"),
    ('{"new_cluster": {"node_type_id": "i3.xlarge"}}', "new_cluster lacks spark_version"),
    ('{"new_cluster": {"spark_version": "15.4.x-cpu-ml-scala2.12"}}', "lacks node_type_id"),
    ("[1, 2]", "holds a list; expected an object"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_a_bad_backend_config_is_refused_before_anything_is_sent(
    idle_workspace, tmp_path, text, message
):
    config = tmp_path / "cluster.json"
    config.write_text(text)
    code, stderr = refused(idle_workspace, str(config), "-e", "train_mlp")
    assert code != 0
    (line,) = stderr.strip().splitlines()
    assert line.startswith("databricks: error: ") and message in line
    assert idle_workspace.requests == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-P", "nproc=0"], "0 is not in the range 1<=x<=64"),
        (["-P", "nproc=two"], "'two' is not a valid integer"),
        (["-P", "epochs"], "'epochs' is not NAME=VALUE"),
        (["-P", "colour=red"], "No such option '--colour'"),
        (["-e", "train_vit"], "'train_vit' is not an entry point"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_sent(idle_workspace, args, message):
    cluster = str(ROOT / "databricks" / "cluster-cpu.json")
    code, stderr = refused(
        idle_workspace, cluster, *(["-e", "train_mlp"] if "-e" not in args else []), *args
    )
    assert code != 0
    (line,) = stderr.strip().splitlines()
    assert line.startswith("databricks: error: ") and message in line
    assert idle_workspace.requests == []


@pytest.mark.slow
def test_the_submit_command_uploads_exactly_a_commit(workspace, tmp_path):
    project = project_snapshot(tmp_path / "project")
    (project / "mlflow.db").write_text("a local store, which must stay here")
    result = submit(
        workspace,
        str(project / "databricks" / "cluster-cpu.json"),
        "-e",
        "preprocess",
        "--experiment-name",
        EXPERIMENT,
        "--no-wait",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    job = workspace.jobs[len(workspace.jobs)]
    job.wait(timeout=600)
    assert job.result_state == "SUCCESS", job.log.read_text()
    tarball = max(
        (p for p in workspace.uploads() if p.name.endswith(".tar.gz")),
        key=lambda p: p.stat().st_mtime,
    )
    with tarfile.open(tarball) as archive:
        names = {m.name.removeprefix("mlflow-project/") for m in archive.getmembers()}
    assert "MLproject" in names and "mlflow.db" not in names
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.strip()
    client = MlflowClient(tracking_uri=workspace.url)
    filter_string = f"tags.git_commit = '{commit}' and tags.step = 'preprocess'"
    (run,) = client.search_runs([experiment_id(workspace)], filter_string)
    assert run.info.status == "FINISHED"
