"""register: register a training run's model and point the `challenger` alias at it.

Produces a model version of `model_name` (default <dataset>_<family>, e.g. digits_cnn) tagged
with family, dataset, data digest, data_run_id, source_run, git commit and its primary metric,
with a short description. Registering the same run again returns its existing version.
"""

import click

from neuroflow import cli
from neuroflow.families import FAMILIES, METRICS


@click.command()
@click.option("--run-id", default="", help="a training run; empty: the best run of --family")
@click.option(
    "--family",
    type=click.Choice(("", *FAMILIES)),
    default="",
    help="the run's family; needed when --run-id is empty",
)
@click.option("--model-name", default="", help="default <dataset>_<family>")
@click.option(
    "--metric",
    type=click.Choice(("", *METRICS)),
    default="",
    help="the metric that picks the best run; empty: the family's primary metric",
)
@click.option("--catalog", default="", help="Unity Catalog catalog (registry URI databricks-uc)")
@click.option("--schema", default="", help="Unity Catalog schema (registry URI databricks-uc)")
def register(run_id, family, model_name, metric, catalog, schema):
    """Register a training run's model and move `challenger` to it."""
    if run_id:
        cli.check_run_id(run_id, "--run-id")
    elif not family:
        raise click.UsageError("give --run-id, or --family to register its best run")
    if family and metric:
        cli.check_metric(family, metric)
    from neuroflow.jobs.register import register as register_run

    with cli.step_run():
        register_run(run_id, family, model_name, metric, catalog, schema)


if __name__ == "__main__":
    cli.run(register)
