"""Click plumbing the steps share: option groups, value checks and a one-line error exit.

Nothing here imports torch or mlflow, so a bad option is refused in a fraction of a second,
before any data is read or any model is built.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import fields
from pathlib import Path

import click

from neuroflow.data import archives
from neuroflow.errors import NeuroflowError
from neuroflow.families import metric_for
from neuroflow.tracking.uris import RUN_ID, check_data_value
from neuroflow.training.config import DEVICES, OPTIMIZERS, TrainConfig

POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
FRACTION = click.FloatRange(0, 1, min_open=True, max_open=True)  # strictly between 0 and 1
DROPOUT = click.FloatRange(0, 1, max_open=True)


def int_list(ctx, param, value: str) -> tuple[int, ...]:
    """'100,50' -> (100, 50): layer sizes, all positive."""
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of positive integers")
    return sizes


def joined(values: tuple) -> str:
    return ",".join(map(str, values))


def check_data(ctx, param, value: str) -> str:
    try:
        return check_data_value(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def check_run_id(value: str, option: str) -> str:
    if not RUN_ID.match(value):
        raise click.BadParameter(f"{value!r} is not a 32-character run id", param_hint=option)
    return value


def check_optional_run_id(ctx, param, value: str) -> str:
    return value and check_run_id(value, f"'--{param.name.replace('_', '-')}'")


def check_data_dir(dataset: str, data_dir: str) -> None:
    """dataset idx reads a folder or an archive of IDX files: refuse a data_dir that is neither
    (preprocess and main, before any run of theirs starts)."""
    path = Path(data_dir).expanduser().resolve()
    if dataset == "idx" and not (path.is_dir() or archives.is_archive(path)):
        raise click.BadParameter(
            f"{data_dir!r} is not a folder or an archive; dataset idx needs a folder of "
            f"IDX files or an archive of them ({', '.join(archives.SUFFIXES)})",
            param_hint="'--data-dir'",
        )


def check_metric(family: str, metric: str) -> None:
    try:
        metric_for(family, metric)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--metric'") from None


_TRAIN_TYPES = {
    "epochs": POSITIVE,
    "batch_size": POSITIVE,
    "lr": click.FloatRange(min=0, min_open=True),
    "optimizer": click.Choice(OPTIMIZERS),
    "weight_decay": click.FloatRange(min=0),
    "seed": NON_NEGATIVE,
    "patience": NON_NEGATIVE,
    "grad_clip": click.FloatRange(min=0),
    "device": click.Choice(DEVICES),
    "max_batches": NON_NEGATIVE,
    "nproc": click.IntRange(1, 64),
}
_TRAIN_HELP = {
    "lr": "peak learning rate of the one-cycle schedule",
    "patience": "epochs without a lower val_loss before stopping; 0 never stops early",
    "device": "auto picks CUDA when present",
    "max_batches": "train batches per epoch; 0 = all",
    "grad_clip": "clip the gradient norm to this; 0 = no clipping",
    "nproc": "processes, one per device; more than 1 trains data-parallel under torchrun",
}


def resume_options(command):
    """--resume-from and --resume: go on from a FAILED or KILLED run's last checkpoint."""
    command = click.option(
        "--resume",
        type=click.BOOL,
        default="false",
        show_default=True,
        help="go on from the newest FAILED or KILLED run with the same parameters, if any",
    )(command)
    return click.option(
        "--resume-from",
        default="",
        callback=check_optional_run_id,
        help="run id of a FAILED or KILLED run to go on from, at its last checkpoint",
    )(command)


def training_options(**defaults):
    """--data, --resume-from and --resume, and every TrainConfig field as an option. Defaults
    come from TrainConfig, except those a family overrides, e.g. training_options(grad_clip=1)."""
    unknown = set(defaults) - {field.name for field in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"not TrainConfig fields: {sorted(unknown)}")

    def decorate(command):
        for field in reversed(fields(TrainConfig)):
            command = click.option(
                f"--{field.name.replace('_', '-')}",
                type=_TRAIN_TYPES[field.name],
                default=defaults.get(field.name, field.default),
                show_default=True,
                help=_TRAIN_HELP.get(field.name),
            )(command)
        command = resume_options(command)
        return click.option(
            "--data",
            default="latest",
            show_default=True,
            callback=check_data,
            help="preprocess run id, runs:/<run id>/prepared, or latest",
        )(command)

    return decorate


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


def step_run():
    """The MLflow run a step works in. Under torchrun only rank 0 opens (and logs to) it."""
    if os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    import mlflow

    return mlflow.start_run()


def run(command: click.Command) -> None:
    """Invoke a step. A user error ends it with one line on stderr and a non-zero exit."""
    if not sys.stderr.isatty():  # progress bars only for people watching
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    name = command.name.replace("-", "_")  # the entry point's name, as in MLproject
    module = main_module() or f"steps.{name}"
    try:
        code = command.main(prog_name=f"python -m {module}", standalone_mode=False)
    except click.ClickException as error:
        fail(name, error.format_message(), error.exit_code)
    except click.Abort:
        fail(name, "aborted", 1)
    except NeuroflowError as error:
        fail(name, str(error), 1)
    except Exception as error:
        if unreachable := tracking_unreachable(error):
            fail(name, unreachable, 1)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def tracking_unreachable(error: Exception) -> str | None:
    """One line for an MLflow call that gave up on a tracking server that stopped answering
    (after MLflow's own retries: MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7, about 4 minutes)."""
    exceptions = sys.modules.get("mlflow.exceptions")
    text = str(error)
    if exceptions is None or not isinstance(error, exceptions.MlflowException):
        return None
    if "API request to" not in text or "Max retries exceeded" not in text:
        return None
    server = os.environ.get("MLFLOW_TRACKING_URI", "the tracking server")
    return (
        f"tracking server {server} stopped answering ({text.split(' failed')[0]} failed after "
        "MLflow's retries); expected it to be reachable (MLFLOW_HTTP_REQUEST_MAX_RETRIES sets "
        "how long to wait)"
    )


def fail(name: str, message: str, code: int) -> None:
    click.echo(f"{name}: error: {' '.join(message.split())}", err=True)
    sys.exit(code)
