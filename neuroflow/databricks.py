"""Submit an entry point to Databricks, after checking all that can be checked on this side.

    python -m neuroflow.databricks databricks/cluster-gpu.json -e train_cnn -P nproc=4

Before anything is uploaded or started it checks the backend config (valid JSON, a new_cluster,
no existing_cluster_id) and the parameters, with the entry point's own options. It then runs
`mlflow run -b databricks` on a clean clone of the committed code, so the uploaded project holds
exactly the code of a commit, which the run records, and no local store, environment or stray
file goes with it.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import tempfile
from pathlib import Path

import click

from neuroflow import cli
from neuroflow.envs import ROOT


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
    try:
        command = getattr(importlib.import_module(f"steps.{entry_point}"), entry_point)
    except (ModuleNotFoundError, AttributeError):
        raise click.BadParameter(
            f"{entry_point!r} is not an entry point", param_hint="'-e'"
        ) from None
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
    from neuroflow.tracking.lineage import git_state

    commit, dirty = git_state(ROOT)
    if commit is None or dirty:
        raise click.UsageError(
            "the code has uncommitted changes (or is not a git checkout); commit them, so the "
            "Databricks run is exactly a commit"
        )
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


if __name__ == "__main__":
    cli.run(submit)
