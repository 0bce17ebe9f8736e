"""Run on Databricks, after checking all that can be checked on this side.

    python -m neuroflow.platforms.databricks databricks/cluster-gpu.json -e train_cnn -P nproc=4
    python -m neuroflow.platforms.databricks job -P epochs=3

The first runs one entry point with `mlflow run -b databricks`. Before anything is uploaded or
started it checks the backend config (valid JSON, a new_cluster, no existing_cluster_id) and the
parameters, with the entry point's own options.

The second submits the pipeline as the multi-task job of databricks.yml through databricks-sdk
(neuroflow.platforms.bundle checks it first): the project's files go where `databricks bundle
deploy` puts them, and every task's run nests under one run for the job, which ends as the job
does.

Both send a clean clone of the committed code, so the workspace holds exactly the code of a
commit, which the runs record, and no local store, environment or stray file goes with it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from neuroflow import cli
from neuroflow.platforms import bundle
from neuroflow.tracking.pins import ROOT


def check_backend_config(path: str) -> dict:
    """The backend config at `path`, or a BadParameter naming what is wrong with it."""
    hint = "'BACKEND_CONFIG'"
    try:
        config = json.loads(Path(path).read_text())
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror}", param_hint=hint) from None
    except json.JSONDecodeError as error:
        raise click.BadParameter(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})",
            param_hint=hint,
        ) from None
    if not isinstance(config, dict):
        raise click.BadParameter(f"{path} holds a {type(config).__name__}; expected an object")
    cluster = config.get("new_cluster")
    if "existing_cluster_id" in config or "existing_cluster_id" in (cluster or {}):
        raise click.BadParameter(
            f"{path} names an existing_cluster_id; MLflow Projects run on a new cluster, so "
            "give a new_cluster spec instead",
            param_hint=hint,
        )
    if not isinstance(cluster, dict):
        raise click.BadParameter(
            f'{path} has no new_cluster object; expected {{"new_cluster": {{...}}, '
            '"libraries": [...]}',
            param_hint=hint,
        )
    missing = [key for key in ("spark_version", "node_type_id") if key not in cluster]
    if missing and not (missing == ["node_type_id"] and "instance_pool_id" in cluster):
        raise click.BadParameter(f"{path}: new_cluster lacks {', '.join(missing)}", param_hint=hint)
    libraries = config.get("libraries", [])
    if not isinstance(libraries, list) or not all(isinstance(lib, dict) for lib in libraries):
        raise click.BadParameter(f"{path}: libraries must be a list of objects", param_hint=hint)
    return config


def check_params(entry_point: str, params: dict[str, str]) -> None:
    """Parse `params` with the entry point's own click options, as the cluster will."""
    command = bundle.step_command(entry_point)
    if command is None:
        raise click.BadParameter(f"{entry_point!r} is not an entry point", param_hint="'-e'")
    args = [f"--{key.replace('_', '-')}={value}" for key, value in params.items()]
    command.make_context(entry_point, args)


def parse_params(ctx, param, values: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not NAME=VALUE")
        params[key] = text
    return params


def clean_clone(destination: Path) -> Path:
    """A shallow clone of this checkout's HEAD: the committed code, and a .git of one commit so
    the run on the cluster still knows its commit."""
    clone = ["git", "clone", "--quiet", "--depth=1", ROOT.as_uri(), str(destination)]
    subprocess.run(clone, check=True, capture_output=True)
    return destination


def committed() -> str:
    """The commit of this checkout, which must have no uncommitted changes."""
    from neuroflow.tracking.lineage import git_state

    commit, dirty = git_state(ROOT)
    if commit is None or dirty:
        raise click.UsageError(
            "the code has uncommitted changes (or is not a git checkout); commit them, so the "
            "Databricks run is exactly a commit"
        )
    return commit


@click.command("databricks")
@click.argument("backend_config")
@click.option("-e", "--entry-point", default="main", show_default=True)
@click.option("-P", "--param", "params", multiple=True, callback=parse_params, metavar="NAME=VALUE")
@click.option(
    "--experiment-name", default=None, help="a workspace path, e.g. /Users/<you>/neuroflow"
)
@click.option(
    "--env-manager",
    type=click.Choice(["local", "virtualenv"]),
    default="local",
    show_default=True,
    help="local: the cluster's libraries are the environment",
)
@click.option("--wait/--no-wait", default=True, show_default=True)
def submit(backend_config, entry_point, params, experiment_name, env_manager, wait):
    """Run ENTRY_POINT on a new Databricks cluster described by BACKEND_CONFIG."""
    config = check_backend_config(backend_config)
    check_params(entry_point, params)
    commit = committed()
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            submitted = mlflow.projects.run(
                str(clean_clone(Path(tmp) / "neuroflow")),
                entry_point,
                parameters=params,
                experiment_name=experiment_name,
                backend="databricks",
                backend_config=config,
                env_manager=env_manager,
                synchronous=False,
            )
        except MlflowException as error:  # ExecutionException is one too
            raise click.ClickException(str(error).splitlines()[0]) from None
    print(f"submitted run {submitted.run_id} of commit {commit[:12]}")
    if wait and not submitted.wait():
        raise click.ClickException(f"run {submitted.run_id} failed on Databricks")


DONE = ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")


@click.command("databricks job")
@click.option(
    "--bundle",
    "bundle_path",
    default=str(ROOT / "databricks.yml"),
    show_default="databricks.yml",
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option("-t", "--target", default=None, help="a target of the bundle; default its default")
@click.option("--job", "job_key", default=None, help="a job of the bundle; default its only one")
@click.option("-P", "--param", "params", multiple=True, callback=parse_params, metavar="NAME=VALUE")
@click.option("--experiment-name", default=None, help="default the bundle's var.experiment")
@click.option("--profile", default=None, help="a profile of ~/.databrickscfg")
@click.option("--timeout", default=4 * 3600, show_default=True, help="seconds to wait")
def submit_job(bundle_path, target, job_key, params, experiment_name, profile, timeout):
    """Submit the job of BUNDLE (preprocess, trainers, register, promote) and follow it."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import DatabricksError

    # the whole bundle is checked before the workspace is asked anything (its user's name only
    # fills in paths)
    job_spec = bundle.job(bundle_path, "<user>", target, params, experiment_name, job_key)
    commit = committed()
    try:
        workspace = WorkspaceClient(profile=profile)
        user = workspace.current_user.me().user_name
    except (DatabricksError, ValueError) as error:
        raise click.ClickException(f"cannot reach the Databricks workspace: {error}") from None
    job_spec = bundle.job(bundle_path, user, target, params, experiment_name, job_key)
    parent, run_id = open_job_run(job_spec, commit), None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            upload(workspace, clean_clone(Path(tmp) / "neuroflow"), job_spec.file_path)
        for task in job_spec.tasks:
            env = task["new_cluster"].setdefault("spark_env_vars", {})
            env.update({"MLFLOW_EXPERIMENT_NAME": job_spec.experiment, cli.PARENT_RUN: parent})
        from databricks.sdk.service.jobs import SubmitTask

        submitted = workspace.jobs.submit(
            run_name=job_spec.name, tasks=[SubmitTask.from_dict(t) for t in job_spec.tasks]
        )
        run_id = submitted.response.run_id
        print(f"submitted job run {run_id} of commit {commit[:12]}; MLflow run {parent}")
        state = follow(workspace, run_id, timeout)
    except BaseException as error:
        stopped = isinstance(error, KeyboardInterrupt)
        if stopped and run_id is not None:
            workspace.jobs.cancel_run(run_id)
        end_job_run(parent, "KILLED" if stopped else "FAILED")
        if isinstance(error, DatabricksError):
            raise click.ClickException(f"Databricks refused the job: {error}") from None
        raise
    result = state.result_state.value if state.result_state else state.life_cycle_state.value
    end_job_run(parent, "FINISHED" if result == "SUCCESS" else "FAILED")
    if result != "SUCCESS":
        raise click.ClickException(f"job run {run_id} ended {result}: {state.state_message}")


def open_job_run(job_spec: bundle.Job, commit: str) -> str:
    """The MLflow run the job's tasks nest under, in the job's experiment; its id."""
    import mlflow

    from neuroflow.tracking.runs import STEP_TAG

    os.environ.setdefault("MLFLOW_TRACKING_URI", "databricks")
    experiment = mlflow.set_experiment(job_spec.experiment)
    run = mlflow.MlflowClient().create_run(
        experiment.experiment_id,
        run_name=job_spec.name,
        tags={STEP_TAG: "job", "git_commit": commit, "mlflow.source.git.commit": commit},
    )
    mlflow.MlflowClient().log_batch(
        run.info.run_id,
        params=[mlflow.entities.Param(k, v) for k, v in job_spec.parameters.items()],
    )
    return run.info.run_id


def end_job_run(run_id: str, status: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_terminated(run_id, status)


def upload(workspace, project: Path, folder: str) -> None:
    """The committed files of `project` into the workspace folder `folder`, as workspace files."""
    from databricks.sdk.service.workspace import ImportFormat

    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    files = [name for name in files if name]
    for parent in sorted({str(Path(folder, name).parent) for name in files}):
        workspace.workspace.mkdirs(parent)

    def one(name: str) -> None:
        content = base64.b64encode((project / name).read_bytes()).decode()
        path = f"{folder}/{name}"
        workspace.workspace.import_(path, content=content, format=ImportFormat.AUTO, overwrite=True)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, files))
    print(f"uploaded {len(files)} files to {folder}")


def follow(workspace, run_id: int, timeout: float):
    """Wait for the job run, printing each task's state as it changes; its final state."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        run = workspace.jobs.get_run(run_id)
        for task in run.tasks or []:
            state = task.state
            text = state.result_state.value if state.result_state else state.life_cycle_state.value
            if seen.get(task.task_key) != text:
                seen[task.task_key] = text
                print(f"  {task.task_key}: {text}", flush=True)
        if run.state.life_cycle_state.value in DONE:
            return run.state
        if time.monotonic() > deadline:
            raise click.ClickException(f"job run {run_id} still running after {timeout} s")
        time.sleep(2)


if __name__ == "__main__":
    if sys.argv[1:2] == ["job"]:
        del sys.argv[1]
        cli.run(submit_job)
    else:
        cli.run(submit)
