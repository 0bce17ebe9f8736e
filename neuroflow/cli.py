"""The steps' click commands, built from the settings, and a one-line error exit.

A step is a function of the configs it names: `@cli.command(Inputs, TrainConfig, CNNConfig)`
gives it one option per setting of each (see neuroflow.settings), with the setting's type,
range, default and help, and calls it with the configs built from the options. Nothing here
imports torch or mlflow, so a bad option is refused in a fraction of a second, before any data
is read or any model is built.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib
import logging
import os
import sys
from pathlib import Path

import click

from neuroflow.config import kind, settings, text
from neuroflow.data import archives
from neuroflow.data.spark import TABLE_NAME
from neuroflow.errors import ConfigError, NeuroflowError


def command(*configs):
    """A click command for the step function it decorates. Each of `configs` is a config class,
    or an instance whose values are the defaults (e.g. TRAINING["rnn"]); the function gets one
    built config per entry, in order, each checked."""

    def decorate(function):
        def callback(**values):
            return function(*(build(config, values) for config in configs))

        callback.__doc__ = function.__doc__
        names = [field.name for config in configs for field, _ in options_of(config)]
        if len(names) != len(set(names)):
            raise TypeError(f"{function.__name__}: two configs share an option: {names}")
        for config in reversed(configs):  # as decorators stack: the last applied comes first
            for field, declared in reversed(options_of(config)):
                default = getattr(config, field.name)
                callback = click.option(
                    flag(field.name),
                    field.name,
                    type=declared.param_type(kind(field)),
                    # as the MLproject writes it: booleans and lists as strings
                    default=text(default) if isinstance(default, bool | tuple) else default,
                    show_default=True,
                    help=declared.help or None,
                )(callback)
        return click.command(function.__name__)(callback)

    return decorate


def options_of(config) -> list:
    return [(field, declared) for field, declared in settings(config) if declared.option]


def build(config, values: dict):
    """The config `config` names (a class, or an instance to start from) with its options'
    values. A rule across fields that fails is reported against those options."""
    chosen = {field.name: values[field.name] for field, _ in options_of(config)}
    try:
        if isinstance(config, type):
            return config(**chosen)
        return dataclasses.replace(config, **chosen)
    except ConfigError as error:
        hint = " / ".join(f"'{flag(name)}'" for name in error.fields)
        raise click.BadParameter(error.problem, param_hint=hint) from None


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def check_data_dir(dataset: str, data_dir: str) -> None:
    """dataset idx reads a folder or an archive of IDX files, dataset folder a folder of
    pictures, dataset parquet a Parquet file or a folder of them, dataset delta a Delta table's
    folder, dataset table a table's name: refuse a data_dir that is not one (preprocess and
    main, before any run starts)."""
    path = Path(data_dir).expanduser().resolve()
    if dataset == "idx" and not (path.is_dir() or archives.is_archive(path)):
        raise click.BadParameter(
            f"{data_dir!r} is not a folder or an archive; dataset idx needs a folder of "
            f"IDX files or an archive of them ({', '.join(archives.SUFFIXES)})",
            param_hint="'--data-dir'",
        )
    if dataset == "parquet" and not (path.is_dir() or path.is_file() and path.suffix == ".parquet"):
        raise click.BadParameter(
            f"{data_dir!r} is not a .parquet file or a folder; dataset parquet needs a Parquet "
            "file, or a folder of them that together are one table",
            param_hint="'--data-dir'",
        )
    if dataset == "delta" and not path.is_dir():
        raise click.BadParameter(
            f"{data_dir!r} is not a folder; dataset delta needs the folder of a Delta table",
            param_hint="'--data-dir'",
        )
    if dataset == "table" and not TABLE_NAME.match(data_dir):
        raise click.BadParameter(
            f"{data_dir!r} is not a table's name; dataset table needs <catalog>.<schema>.<table>"
            ", <schema>.<table> or <table>",
            param_hint="'--data-dir'",
        )
    if dataset == "folder" and not path.is_dir():
        raise click.BadParameter(
            f"{data_dir!r} is not a folder; dataset folder needs a folder of pictures by "
            "class (<class>/<image>, or train/, val/ and test/ of them)",
            param_hint="'--data-dir'",
        )


def launch(nproc: int, device: str) -> None:
    """Re-run this step under torchrun with `nproc` processes, unless it is one of them."""
    if nproc == 1 or "LOCAL_RANK" in os.environ:
        return
    if device != "cpu":
        import torch

        gpus = torch.cuda.device_count()
        if (device == "cuda" or gpus) and nproc > gpus:
            raise click.BadParameter(
                f"nproc={nproc} but this machine has {gpus} GPU(s); expected at most {gpus}, "
                "or device=cpu",
                param_hint="'--nproc'",
            )
    module = main_module()  # steps.<entry point>, as started with python -m
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    # The workers know their number from torchrun; --nproc would also look like an abbreviated
    # torchrun option to torchrun's own parser.
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        skip = arg == "--nproc"
        if not skip:
            args.append(arg)
    os.execv(sys.executable, [sys.executable, *torchrun, "-m", module, *args])


def main_module() -> str | None:
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec.name if spec else None


SYSTEM_METRICS_EVERY_S = "2"  # MLflow samples every 10 s: no point at all in a digits run


# A run every step's run nests under (a Databricks job's run: neuroflow.platforms.databricks)
PARENT_RUN = "NEUROFLOW_PARENT_RUN_ID"
# "<module>:<function>" called with each step's run id once the run has finished: how a platform
# takes a step's results on (a Databricks job's task: neuroflow.platforms.tasks)
AFTER_RUN = "NEUROFLOW_AFTER_RUN"


@contextlib.contextmanager
def step_run(system_metrics: bool = False):
    """The MLflow run a step works in. Under torchrun only rank 0 opens (and logs to) it. With
    `system_metrics`, MLflow samples CPU, memory, disk, network and (with nvidia-ml-py) GPU use
    while it runs, as system/ metrics. The run nests under PARENT_RUN where that is set, and
    AFTER_RUN is called with its id once it has finished."""
    if os.environ.get("RANK", "0") != "0":
        yield None
        return
    import mlflow

    if system_metrics:
        import psutil

        os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", SYSTEM_METRICS_EVERY_S)
        psutil.cpu_percent()  # a first call starts the count: MLflow's first sample then reads it
    parent = os.environ.get(PARENT_RUN) or None
    with mlflow.start_run(log_system_metrics=system_metrics, parent_run_id=parent) as run:
        yield run
    if after := os.environ.get(AFTER_RUN):
        module, _, function = after.partition(":")
        getattr(importlib.import_module(module), function)(run.info.run_id)


EXIT_CODE: list[int] = []  # set by a step's process as it exits; see skip_teardown


@atexit.register  # registered before torch and MLflow are imported, so it runs after theirs
def skip_teardown() -> None:
    """End a step's process without tearing the interpreter down. By now every other exit
    handler has run (MLflow flushes its logging there); freeing torch's and MLflow's objects
    one by one would only cost time, over a second of every step on 2 cores."""
    if EXIT_CODE:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_CODE[0])


def exit_step(code: int) -> None:
    """sys.exit(code); in a process started as the step (python -m steps.<name>), the exit
    skips the interpreter's teardown (skip_teardown). A step called in-process, by a test,
    exits as any code does."""
    if (main_module() or "").startswith("steps."):
        EXIT_CODE[:] = [code]
    sys.exit(code)


def run(command: click.Command) -> None:
    """Invoke a step. A user error ends it with one line on stderr and a non-zero exit."""
    if not sys.stderr.isatty():  # progress bars only for people watching
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    name = command.name.replace("-", "_")  # the entry point's name, as in MLproject
    module = (main_module() or f"steps.{name}").removesuffix(".__main__")
    try:
        code = command.main(prog_name=f"python -m {module}", standalone_mode=False)
    except click.ClickException as error:
        fail(name, error.format_message(), error.exit_code)
    except click.Abort:
        fail(name, "aborted", 1)
    except NeuroflowError as error:
        fail(name, str(error), 1)
    except Exception as error:
        if said := tracking_unreachable(error) or tracking_refused(error):
            fail(name, said, 1)
        raise
    exit_step(code if isinstance(code, int) else 0)


def tracking_unreachable(error: Exception) -> str | None:
    """One line for an MLflow call that gave up on a tracking server that stopped answering
    (after MLflow's own retries: MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7, about 4 minutes)."""
    exceptions = sys.modules.get("mlflow.exceptions")
    said = str(error)
    if exceptions is None or not isinstance(error, exceptions.MlflowException):
        return None
    if "API request to" not in said or "Max retries exceeded" not in said:
        return None
    server = os.environ.get("MLFLOW_TRACKING_URI", "the tracking server")
    return (
        f"tracking server {server} stopped answering ({said.split(' failed')[0]} failed after "
        "MLflow's retries); expected it to be reachable (MLFLOW_HTTP_REQUEST_MAX_RETRIES sets "
        "how long to wait)"
    )


REFUSALS = {"UNAUTHENTICATED": "401", "PERMISSION_DENIED": "403"}


def tracking_refused(error: Exception) -> str | None:
    """One line for an MLflow call the tracking server refused: no or wrong credentials (401),
    or a user without the permission (403). It names the user and what the server said."""
    exceptions = sys.modules.get("mlflow.exceptions")
    if exceptions is None or not isinstance(error, exceptions.MlflowException):
        return None
    status = REFUSALS.get(error.error_code)
    if status is None:
        return None
    said = " ".join(str(error).split()).removeprefix(f"{error.error_code}: ")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"user {user!r}" if user else "a request without credentials"
    expected = (
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD of a user of that server"
        if status == "401"
        else "a user whose role allows it (README: A team's tracking server)"
    )
    return f"the tracking server refused {who} ({status}): {said}; expected {expected}"


def fail(name: str, message: str, code: int) -> None:
    click.echo(f"{name}: error: {' '.join(message.split())}", err=True)
    exit_step(code)
