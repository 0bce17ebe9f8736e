"""main: the whole pipeline, as one tree of runs.

preprocess, then train_mlp, train_cnn and train_rnn, register and promote each, then
train_dcgan judged by the CNN champion just decided, register and promote it. Every child is a
nested `mlflow.run` of this project folder, or a finished run reused from the step cache.
Produces summary.md (one row per family: run, metric, registered version, decision) and the tag
reused_steps.
"""

import click

from neuroflow import cli
from neuroflow.data.sources import DATASETS
from neuroflow.families import FAMILIES
from neuroflow.pipeline.config import PipelineConfig

DEFAULTS = PipelineConfig()
ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")


def model_list(ctx, param, value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(","))
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not value.strip():
        raise click.BadParameter(
            f"{value!r} names unknown families {unknown}; expected a comma-separated list "
            f"of {', '.join(FAMILIES)}"
        )
    if len(set(names)) != len(names):
        raise click.BadParameter(f"{value!r} names a family twice")
    return names


@click.command()
@click.option("--dataset", type=click.Choice(DATASETS), default=DEFAULTS.dataset, show_default=True)
@click.option("--data-dir", default=DEFAULTS.data_dir, show_default=True)
@click.option("--models", default=",".join(DEFAULTS.models), show_default=True, callback=model_list)
@click.option(
    "--epochs",
    type=cli.NON_NEGATIVE,
    default=DEFAULTS.epochs,
    show_default=True,
    help="epochs for every trainer; 0 = each trainer's own default",
)
@click.option("--use-cache", type=click.BOOL, default="true", show_default=True)
@click.option("--promote", type=click.BOOL, default="true", show_default=True)
@click.option(
    "--env-manager",
    type=click.Choice(ENV_MANAGERS),
    default=DEFAULTS.env_manager,
    show_default=True,
    help="for every child run",
)
def main(**options):
    """Run the whole pipeline and log summary.md."""
    cli.check_data_dir(options["dataset"], options["data_dir"])  # before any child run starts
    from neuroflow.pipeline.main import run_pipeline

    with cli.step_run():
        run_pipeline(PipelineConfig(**options))


if __name__ == "__main__":
    cli.run(main)
