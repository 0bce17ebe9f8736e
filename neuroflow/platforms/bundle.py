"""The job of databricks.yml, read and checked here, as the runs/submit request that starts it.

Every field a task needs is checked before anything is sent: a bundle that lacks one, names an
unknown task, job parameter, entry point or option, or asks for a Runtime older than 15.4 LTS ML
is refused with one line naming it. The bundle's own references are resolved the way
`databricks bundle deploy` resolves them (${var.*}, ${bundle.*}, ${workspace.*}), and
{{job.parameters.*}} with the job's parameters, since a one-time run has none of its own;
{{tasks.<task>.values.<key>}} is left for the job to resolve as its tasks hand values on.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import click

RUNTIME = re.compile(r"^(\d+)\.(\d+)\.x-(?:cpu-|gpu-)?ml-")
OLDEST_RUNTIME = (15, 4)
BUNDLE_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")
JOB_PARAMETER = re.compile(r"\{\{\s*job\.parameters\.([A-Za-z0-9_]+)\s*\}\}")
TASK_VALUE = re.compile(r"\{\{\s*tasks\.([A-Za-z0-9_]+)\.values\.[A-Za-z0-9_]+\s*\}\}")


class BundleError(click.ClickException):
    """A bundle that cannot be submitted: one line, naming the file and what is wrong."""


@dataclass
class Job:
    name: str  # the run's name
    file_path: str  # where the project's files go in the workspace
    experiment: str
    parameters: dict[str, str]
    tasks: list[dict]  # SubmitTask dicts, each with its own new_cluster


def load(path: Path, target: str | None = None) -> tuple[dict, str]:
    """The bundle at `path` with `target`'s overrides merged in, and the target's name."""
    import yaml

    try:
        bundle = yaml.safe_load(path.read_text())
    except OSError as error:
        raise BundleError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BundleError(f"{path} is not valid YAML{where}") from None
    if not isinstance(bundle, dict):
        raise BundleError(f"{path} holds no mapping; expected a Databricks bundle")
    targets = bundle.get("targets") or {}
    if target is None:
        target = next((name for name, t in targets.items() if (t or {}).get("default")), "dev")
    elif target not in targets:
        known = ", ".join(targets) or "none"
        raise BundleError(f"{path} has no target {target!r}; its targets: {known}")
    overrides = targets.get(target) or {}
    for section in ("workspace", "variables"):
        merged = {**(bundle.get(section) or {})}
        for key, value in (overrides.get(section) or {}).items():
            if section == "variables" and isinstance(merged.get(key), dict):
                value = {**merged[key], "default": value.get("default", value)}
            merged[key] = value
        bundle[section] = merged
    bundle["mode"] = overrides.get("mode", "")
    return bundle, target


def job(
    path: Path,
    user: str,
    target: str | None = None,
    parameters: dict[str, str] | None = None,
    experiment: str | None = None,
    job_key: str | None = None,
) -> Job:
    """The checked job of the bundle at `path`, for workspace user `user`."""
    bundle, target = load(path, target)
    where = path.name

    def need(mapping, key: str, what: str):
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if value in (None, "", [], {}):
            raise BundleError(f"{where}: {what} has no {key}")
        return value

    name = need(bundle.get("bundle"), "name", "bundle")
    jobs = need(bundle.get("resources"), "jobs", "resources")
    if job_key is None:
        if len(jobs) != 1:
            raise BundleError(f"{where} defines jobs {', '.join(jobs)}; name one with --job")
        job_key = next(iter(jobs))
    if job_key not in jobs:
        raise BundleError(f"{where} has no job {job_key!r}; its jobs: {', '.join(jobs)}")
    spec = jobs[job_key] or {}
    what = f"job {job_key!r}"

    variables = {
        key: (value or {}).get("default", "") if isinstance(value, dict) else value
        for key, value in bundle["variables"].items()
    }
    if experiment:
        variables["experiment"] = experiment
    known = {
        "bundle.name": name,
        "bundle.target": target,
        "workspace.current_user.userName": user,
    }

    def resolve(value, context: str):
        if isinstance(value, dict):
            return {k: resolve(v, f"{context}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, context) for v in value]
        if not isinstance(value, str):
            return value

        def one(match) -> str:
            reference = match.group(1)
            if reference.startswith("var.") and reference[4:] in variables:
                return str(resolve(variables[reference[4:]], context))
            if reference in known:
                return known[reference]
            raise BundleError(f"{where}: {context} refers to unknown ${{{reference}}}")

        return BUNDLE_REFERENCE.sub(one, value)

    workspace = bundle["workspace"]
    default_root = "/Workspace/Users/${workspace.current_user.userName}/.bundle/${bundle.name}"
    known["workspace.root_path"] = resolve(
        workspace.get("root_path", f"{default_root}/${{bundle.target}}"), "workspace.root_path"
    )
    known["workspace.file_path"] = resolve(
        workspace.get("file_path", "${workspace.root_path}/files"), "workspace.file_path"
    )

    declared = {}
    for parameter in spec.get("parameters") or []:
        declared[need(parameter, "name", f"a parameter of {what}")] = str(
            parameter.get("default", "")
        )
    for key in parameters or {}:
        if key not in declared:
            raise BundleError(
                f"-P {key}: {what} has no parameter {key!r}; its parameters: "
                f"{', '.join(declared) or 'none'}"
            )
    values = {**declared, **(parameters or {})}

    clusters = {}
    for cluster in spec.get("job_clusters") or []:
        key = need(cluster, "job_cluster_key", f"a job cluster of {what}")
        new = need(cluster, "new_cluster", f"job cluster {key!r}")
        clusters[key] = check_cluster(
            resolve(new, f"job cluster {key!r}"), f"job cluster {key!r}", where
        )

    tasks = need(spec, "tasks", what)
    keys = [need(task, "task_key", f"a task of {what}") for task in tasks]
    check_families(keys, what, where)
    submitted = []
    for task in tasks:
        submitted.append(
            check_task(task, keys, clusters, values, resolve, known["workspace.file_path"], where)
        )
    order(submitted, where)
    run_name = spec.get("name", job_key)
    if bundle["mode"] == "development":
        run_name = f"[dev {user.split('@')[0]}] {run_name}"
    return Job(
        name=run_name,
        file_path=known["workspace.file_path"],
        experiment=str(resolve(variables.get("experiment", ""), "var.experiment")),
        parameters=values,
        tasks=submitted,
    )


def check_families(keys: list[str], what: str, where: str) -> None:
    """The job does what `main` does: it trains, registers and promotes every family."""
    from neuroflow.families import FAMILIES

    for family in FAMILIES:
        for step in ("train", "register", "promote"):
            if f"{step}_{family}" not in keys:
                raise BundleError(
                    f"{where}: {what} has no task {step}_{family}; expected train_, register_ "
                    f"and promote_ tasks for every family ({', '.join(FAMILIES)})"
                )


def check_cluster(cluster: dict, what: str, where: str) -> dict:
    version = cluster.get("spark_version")
    if not version:
        raise BundleError(f"{where}: {what} has no spark_version")
    if "node_type_id" not in cluster and "instance_pool_id" not in cluster:
        raise BundleError(f"{where}: {what} has no node_type_id")
    match = RUNTIME.match(version)
    if not match or (int(match.group(1)), int(match.group(2))) < OLDEST_RUNTIME:
        raise BundleError(
            f"{where}: {what}: spark_version {version!r}; expected Databricks Runtime 15.4 "
            "LTS ML or newer, e.g. 15.4.x-cpu-ml-scala2.12"
        )
    return dict(cluster)


def check_task(task, keys, clusters, parameters, resolve, file_path, where) -> dict:
    key = task["task_key"]
    what = f"task {key!r}"
    for dependency in task.get("depends_on") or []:
        upstream = dependency.get("task_key") if isinstance(dependency, dict) else None
        if upstream not in keys:
            raise BundleError(f"{where}: {what} depends on unknown task {upstream!r}")
    python = task.get("spark_python_task")
    if not isinstance(python, dict) or not python.get("python_file"):
        raise BundleError(f"{where}: {what} has no spark_python_task.python_file")
    arguments = [str(argument) for argument in python.get("parameters") or []]
    if not arguments:
        raise BundleError(f"{where}: {what} has no parameters; expected an entry point first")
    arguments = [substitute(argument, parameters, what, where) for argument in arguments]
    check_options(arguments, what, where)
    if "new_cluster" in task:
        cluster = check_cluster(resolve(task["new_cluster"], what), what, where)
    else:
        cluster_key = task.get("job_cluster_key")
        if not cluster_key:
            raise BundleError(f"{where}: {what} has no job_cluster_key or new_cluster")
        if cluster_key not in clusters:
            raise BundleError(f"{where}: {what} runs on unknown job cluster {cluster_key!r}")
        cluster = dict(clusters[cluster_key])
    libraries = []
    for library in resolve(task.get("libraries") or [], what):
        if isinstance(library, dict) and "requirements" in library:
            library = {"requirements": workspace_path(library["requirements"], file_path)}
        libraries.append(library)
    return {
        "task_key": key,
        "depends_on": [{"task_key": d["task_key"]} for d in task.get("depends_on") or []],
        "spark_python_task": {
            "python_file": workspace_path(resolve(python["python_file"], what), file_path),
            "parameters": arguments,
            "source": "WORKSPACE",
        },
        "new_cluster": cluster,
        "libraries": libraries,
    }


def substitute(argument: str, parameters: dict[str, str], what: str, where: str) -> str:
    def one(match) -> str:
        name = match.group(1)
        if name not in parameters:
            raise BundleError(f"{where}: {what} refers to unknown job parameter {name!r}")
        return parameters[name]

    return JOB_PARAMETER.sub(one, argument)


def step_command(entry_point: str) -> click.Command | None:
    """The click command of steps/<entry_point>.py, or None where there is no such step."""
    try:
        return getattr(importlib.import_module(f"steps.{entry_point}"), entry_point)
    except (ModuleNotFoundError, AttributeError):
        return None


def check_options(arguments: list[str], what: str, where: str) -> None:
    """The first argument names an entry point and the rest are its options, as
    databricks/task.py will run them."""
    entry_point, *options = arguments
    command = step_command(entry_point)
    if command is None:
        raise BundleError(f"{where}: {what} runs {entry_point!r}, not an entry point")
    names = {name for param in command.params for name in param.opts}
    for option in options:
        name = option.split("=", 1)[0]
        if name not in names:
            raise BundleError(f"{where}: {what}: {entry_point} has no option {name}")
    known_now = [option for option in options if "{{" not in option]  # the rest: task values
    try:
        command.make_context(entry_point, known_now)
    except click.ClickException as error:
        raise BundleError(f"{where}: {what}: {error.format_message()}") from None


def order(tasks: list[dict], where: str) -> list[str]:
    """The task keys in an order that runs each after its dependencies; refuses a cycle, and a
    task value read from a task that does not run before."""
    upstream = {t["task_key"]: {d["task_key"] for d in t["depends_on"]} for t in tasks}

    def ancestors(key: str, seen: tuple[str, ...] = ()) -> set[str]:
        if key in seen:
            raise BundleError(f"{where}: tasks {' -> '.join((*seen, key))} depend on each other")
        found = set()
        for parent in upstream[key]:
            found |= {parent, *ancestors(parent, (*seen, key))}
        return found

    for task in tasks:
        before = ancestors(task["task_key"])
        for argument in task["spark_python_task"]["parameters"]:
            for source in TASK_VALUE.findall(argument):
                if source not in before:
                    raise BundleError(
                        f"{where}: task {task['task_key']!r} reads a value of task {source!r}, "
                        "which it does not depend on"
                    )
    done: list[str] = []
    while len(done) < len(tasks):
        done += [k for k, deps in upstream.items() if k not in done and deps <= set(done)]
    return done


def workspace_path(path: str, file_path: str) -> str:
    """A path of the bundle as the cluster sees it: relative ones are the project's files."""
    if path.startswith(("/", "dbfs:", "s3:", "abfss:", "gs:")):
        return path
    return f"{file_path}/{path.removeprefix('./')}"
