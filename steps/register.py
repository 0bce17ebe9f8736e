"""register: register a training run's model and point the `challenger` alias at it.

Produces a model version of `model_name` (default <dataset>_<family>, e.g. digits_cnn, or for
an IDX folder its name: mnist_t10k_cnn) tagged
with family, dataset, data digest, data_run_id, source_run, git commit and its primary metric,
with a short description. Registering the same run again returns its existing version.
"""

import click

from neuroflow import cli
from neuroflow.settings import RegisterConfig


@cli.command(RegisterConfig)
def register(config: RegisterConfig):
    """Register a training run's model and move `challenger` to it."""
    if not (config.run_id or config.family):
        raise click.UsageError("give --run-id, or --family to register its best run")
    if config.run_id and config.data:
        raise click.UsageError(
            f"--data={config.data} chooses among runs; expected it only without --run-id"
        )
    from neuroflow.jobs.register import register as register_run

    with cli.step_run():
        register_run(
            config.run_id,
            config.family,
            config.model_name,
            config.metric,
            config.catalog,
            config.schema,
            config.data,
        )


if __name__ == "__main__":
    cli.run(register)
