"""The Databricks backend and the bundle's multi-task job, proven against a loopback workspace
(tests/databricks_loopback.py) and a real `mlflow server` behind it; and the submit commands'
checks, which run before anything is uploaded."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from databricks_loopback import Workspace
from helpers import ROOT, project_snapshot, python_env
from neuroflow.tracking.pins import read_pins

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
        [sys.executable, "-m", "neuroflow.platforms.databricks", *args],
        cwd=cwd,
        env=client_env(workspace),
        capture_output=True,
        text=True,
        timeout=600,
    )


def refused(workspace: Workspace, *args: str) -> tuple[int, str]:
    """`python -m neuroflow.platforms.databricks args...` run in this process, with the client's
    environment, as the command runs it: (exit code, stderr)."""
    from neuroflow import cli
    from neuroflow.platforms import databricks

    job = args[:1] == ("job",)
    command, args = (databricks.submit_job, args[1:]) if job else (databricks.submit, args)
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "MLFLOW_TRACKING_URI"):
            patch.setenv(name, client_env(workspace)[name])
        patch.setattr(sys, "argv", ["databricks", *args])
        with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit:
            cli.run(command)
    return exit.value.code, stderr.getvalue()


def assert_refused(workspace: Workspace, args: list[str], message: str) -> None:
    """The command, given `args`, exits non-zero with one line holding `message`, and sends
    nothing to the workspace."""
    code, stderr = refused(workspace, *args)
    assert code != 0
    (line,) = stderr.strip().splitlines()
    prefix = "databricks job: error: " if args[:1] == ["job"] else "databricks: error: "
    assert line.startswith(prefix) and message in line, line
    assert workspace.requests == []


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
    assert_refused(idle_workspace, [str(config), "-e", "train_mlp"], message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-P", "nproc=0"], "0 is not in the range 1<=x<=64"),
        (["-P", "nproc=two"], "'two' is not a valid integer"),
        (["-P", "epochs"], "'epochs' is not NAME=VALUE"),
        (["-P", "colour=red"], "No such option '--colour'"),
        (["-e", "train_no_such_family"], "'train_no_such_family' is not an entry point"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_sent(idle_workspace, args, message):
    cluster = str(ROOT / "databricks" / "cluster-cpu.json")
    entry_point = ["-e", "train_mlp"] if "-e" not in args else []
    assert_refused(idle_workspace, [cluster, *entry_point, *args], message)


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


# -- the bundle's multi-task job -----------------------------------------------------------------

JOB_EXPERIMENT = "/Users/tests/neuroflow-job"
FAMILIES = ("mlp", "cnn", "rnn", "dcgan")


@pytest.mark.slow
def test_the_bundle_job_runs_every_task_in_order_into_one_tree(workspace, tmp_path):
    project = project_snapshot(tmp_path / "project")
    result = submit(
        workspace,
        "job",
        "--experiment-name",
        JOB_EXPERIMENT,
        *("-P", "epochs=1", "-P", "dcgan_epochs=1", "-P", "max_batches=4"),
        cwd=project,
    )
    job = workspace.jobs[len(workspace.jobs)]
    logs = {key: task.log.read_text()[-2000:] for key, task in job.tasks.items() if task.log}
    assert result.returncode == 0, (result.stderr, logs)

    # Every task ran, each after the tasks it depends on; the order as the workspace saw it.
    bundle = yaml.safe_load((project / "databricks.yml").read_text())
    declared = bundle["resources"]["jobs"]["neuroflow"]["tasks"]
    assert set(job.tasks) == {task["task_key"] for task in declared}
    for key, task in job.tasks.items():
        assert task.result_state == "SUCCESS", (key, logs.get(key))
        for dependency in task.task.get("depends_on", []):
            assert job.tasks[dependency["task_key"]].end_time <= task.start_time, key
    started = sorted(job.tasks.items(), key=lambda item: item[1].start_time)
    first = started[0][1].start_time
    for key, task in started:
        print(f"{key:>15}: {task.start_time - first:6.1f} s -> {task.end_time - first:6.1f} s")

    # The project went where `databricks bundle deploy` puts it: exactly the commit's files.
    files = workspace.files / "Users" / "tests@example.com" / ".bundle" / "neuroflow" / "dev"
    uploaded = {  # less the bytecode the tasks' Python wrote there as they ran
        str(p.relative_to(files / "files"))
        for p in files.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.split()
    assert uploaded == set(tracked)
    (library,) = job.payload["tasks"][0]["libraries"]
    deployed = "/Workspace/Users/tests@example.com/.bundle/neuroflow/dev/files"
    assert library == {"requirements": f"{deployed}/requirements.txt"}
    assert all(t["new_cluster"]["spark_version"] >= "15.4" for t in job.payload["tasks"])

    # One tree in MLflow: the job's run, and under it one run per task, linked by task values.
    client = MlflowClient(tracking_uri=workspace.url)
    experiment = client.get_experiment_by_name(JOB_EXPERIMENT).experiment_id
    (parent,) = client.search_runs([experiment], "tags.step = 'job'")
    assert parent.info.status == "FINISHED"
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == len(job.tasks)
    tree = {parent.info.run_id, *(child.info.run_id for child in children)}
    for run in client.search_runs([experiment]):  # promote's evaluations nest under its run
        assert run.info.run_id == parent.info.run_id or run.data.tags["mlflow.parentRunId"] in tree
    by_step: dict[str, list] = {}
    for child in children:
        assert child.info.status == "FINISHED"
        by_step.setdefault(child.data.tags["step"], []).append(child)
    assert {step: len(runs) for step, runs in by_step.items()} == {
        "preprocess": 1,
        **{f"train_{f}": 1 for f in FAMILIES},
        "register": 4,
        "promote": 4,
    }
    (prepared,) = by_step["preprocess"]
    trained = {f: by_step[f"train_{f}"][0] for f in FAMILIES}
    assert all(run.data.params["data"] == prepared.info.run_id for run in trained.values())
    registered = {run.data.params["run_id"]: run for run in by_step["register"]}
    assert set(registered) == {run.info.run_id for run in trained.values()}
    for run in trained.values():
        model = registered[run.info.run_id].data.tags["registered_model"]
        assert client.get_model_version_by_alias(model, "champion").run_id == run.info.run_id
    cnn = registered[trained["cnn"].info.run_id].data.tags["registered_model"]
    assert trained["dcgan"].data.params["evaluator"] == f"models:/{cnn}@champion"
    print(f"job run {parent.info.run_id}: {len(children)} task runs under it")


@pytest.mark.slow
def test_a_failed_task_fails_the_job_and_skips_what_follows(workspace, tmp_path):
    project = project_snapshot(tmp_path / "project")
    client = MlflowClient(tracking_uri=workspace.url)
    models = {m.name: m.latest_versions for m in client.search_registered_models()}
    empty = tmp_path / "empty"  # a folder with no IDX files: preprocess fails on the cluster
    empty.mkdir()
    experiment = f"{JOB_EXPERIMENT}-failed"
    params = ("-P", "dataset=idx", "-P", f"data_dir={empty}")
    result = submit(workspace, "job", "--experiment-name", experiment, *params, cwd=project)
    assert result.returncode != 0
    job = workspace.jobs[len(workspace.jobs)]
    assert result.stderr.strip().splitlines()[-1] == (
        f"databricks job: error: job run {len(workspace.jobs)} ended FAILED: tasks failed: "
        "preprocess"
    )
    states = {key: task.result_state for key, task in job.tasks.items()}
    assert states.pop("preprocess") == "FAILED"
    assert set(states.values()) == {"UPSTREAM_FAILED"}
    assert all(task.process is None for key, task in job.tasks.items() if key != "preprocess")

    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (parent,) = client.search_runs([experiment_id], "tags.step = 'job'")
    (child,) = client.search_runs([experiment_id], "tags.step != 'job'")
    assert parent.info.status == child.info.status == "FAILED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert {m.name: m.latest_versions for m in client.search_registered_models()} == models


def interruptible() -> None:
    """In the child: SIGINT as a terminal delivers it, whatever the test process inherited (a
    pytest-xdist worker may run with SIGINT ignored or blocked, and a child inherits both)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.slow
def test_stopping_the_submit_command_cancels_the_job(workspace, tmp_path):
    project = project_snapshot(tmp_path / "project")
    experiment = f"{JOB_EXPERIMENT}-stopped"
    command = [sys.executable, "-m", "neuroflow.platforms.databricks", "job"]
    command += ["--experiment-name", experiment, "-P", "epochs=1", "-P", "max_batches=2"]
    submitter = subprocess.Popen(
        command,
        cwd=project,
        env=client_env(workspace),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    count, deadline = len(workspace.jobs), time.monotonic() + 300

    def preprocessing() -> bool:
        job = workspace.jobs.get(count + 1)
        return bool(job and job.tasks and job.tasks["preprocess"].life_cycle_state == "RUNNING")

    while not preprocessing():
        assert time.monotonic() < deadline and submitter.poll() is None
        time.sleep(0.2)
    job = workspace.jobs[count + 1]
    submitter.send_signal(signal.SIGINT)
    _, stderr = submitter.communicate(timeout=120)
    assert submitter.returncode != 0, stderr[-2000:]  # what it printed, to tell why
    assert stderr.strip().splitlines()[-1] == "databricks job: error: aborted"
    job.wait(timeout=60)
    assert job.result_state == "CANCELED"
    assert {t.result_state for k, t in job.tasks.items() if k != "preprocess"} == {
        "UPSTREAM_FAILED"
    }
    client = MlflowClient(tracking_uri=workspace.url)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (parent,) = client.search_runs([experiment_id], "tags.step = 'job'")
    assert parent.info.status == "KILLED"


def a_bundle(tmp_path: Path, change) -> str:
    """databricks.yml with `change` made to it, as a file; its path."""
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    change(bundle["resources"]["jobs"]["neuroflow"])
    path = tmp_path / "databricks.yml"
    path.write_text(yaml.safe_dump(bundle))
    return str(path)


def task(job: dict, key: str) -> dict:
    return next(t for t in job["tasks"] if t["task_key"] == key)


BAD_BUNDLES = [
    (
        lambda job: task(job, "train_cnn")["spark_python_task"].pop("python_file"),
        "task 'train_cnn' has no spark_python_task.python_file",
    ),
    (
        lambda job: job["job_clusters"][0]["new_cluster"].pop("spark_version"),
        "job cluster 'cpu' has no spark_version",
    ),
    (
        lambda job: job["job_clusters"][0]["new_cluster"].update(
            spark_version="14.3.x-cpu-ml-scala2.12"
        ),
        "expected Databricks Runtime 15.4 LTS ML or newer",
    ),
    (lambda job: job.pop("tasks"), "job 'neuroflow' has no tasks"),
    (
        lambda job: task(job, "register_cnn").update(
            depends_on=[{"task_key": "train_no_such_family"}]
        ),
        "task 'register_cnn' depends on unknown task 'train_no_such_family'",
    ),
    (
        lambda job: task(job, "register_cnn").update(depends_on=[{"task_key": "preprocess"}]),
        "task 'register_cnn' reads a value of task 'train_cnn', which it does not depend on",
    ),
    (
        lambda job: task(job, "preprocess").update(depends_on=[{"task_key": "promote_dcgan"}]),
        "depend on each other",
    ),
    (
        lambda job: task(job, "train_mlp")["spark_python_task"]["parameters"].append("--epoch=3"),
        "task 'train_mlp': train_mlp has no option --epoch",
    ),
    (
        lambda job: task(job, "train_mlp")["spark_python_task"]["parameters"].append(
            "--lr={{job.parameters.lr}}"
        ),
        "task 'train_mlp' refers to unknown job parameter 'lr'",
    ),
    (lambda job: task(job, "train_mlp").pop("job_cluster_key"), "has no job_cluster_key"),
]


@pytest.mark.parametrize(("change", "message"), BAD_BUNDLES)
def test_a_bad_bundle_is_refused_before_anything_is_sent(idle_workspace, tmp_path, change, message):
    assert_refused(idle_workspace, ["job", "--bundle", a_bundle(tmp_path, change)], message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-P", "colour=red"], "-P colour: job 'neuroflow' has no parameter 'colour'"),
        (["-t", "staging"], "has no target 'staging'; its targets: dev, prod"),
        (["-P", "epochs=zero"], "task 'train_mlp': Invalid value for '--epochs': 'zero' is not"),
        (["-P", "dataset=cifar"], "task 'preprocess': Invalid value for '--dataset': 'cifar'"),
        (["--bundle", "missing.yml"], "cannot read missing.yml"),
    ],
)
def test_bad_job_options_are_refused_before_anything_is_sent(idle_workspace, args, message):
    assert_refused(idle_workspace, ["job", *args], message)


def test_the_bundle_resolves_as_a_deploy_would():
    from neuroflow.platforms import bundle

    job = bundle.job(ROOT / "databricks.yml", "ada@example.com", "prod", {"epochs": "3"})
    assert job.file_path == "/Workspace/Shared/.bundle/neuroflow/prod/files"
    assert job.experiment == "/Users/ada@example.com/neuroflow" and job.name == "neuroflow"
    (train,) = [t for t in job.tasks if t["task_key"] == "train_cnn"]
    assert train["spark_python_task"]["parameters"] == [
        "train_cnn",
        "--data={{tasks.preprocess.values.run_id}}",
        "--epochs=3",
        "--max-batches=0",
    ]
    assert train["spark_python_task"]["python_file"] == f"{job.file_path}/databricks/task.py"
    assert train["libraries"] == [{"requirements": f"{job.file_path}/requirements.txt"}]
    dev = bundle.job(ROOT / "databricks.yml", "ada@example.com")
    assert dev.name == "[dev ada] neuroflow"
    assert dev.file_path == "/Workspace/Users/ada@example.com/.bundle/neuroflow/dev/files"
    order = bundle.order(dev.tasks, "databricks.yml")
    assert order.index("promote_cnn") < order.index("train_dcgan") < order.index("promote_dcgan")


def test_a_task_naming_no_entry_point_fails_with_one_line():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "databricks" / "task.py"),
            "train_no_such_family",
            "--epochs=1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "task: 'train_no_such_family' is not an entry point; expected one of main, "
    )
