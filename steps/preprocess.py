"""preprocess: prepare a dataset for every later step.

Produces the artifact folder `prepared/`: train, val and test as uint8 image and label arrays
plus metadata.json (classes, shape, normalisation, digests, source, params), with each split
logged as an MLflow input. Later steps read it by URI: runs:/<run id>/prepared.
"""

import click

from neuroflow import cli
from neuroflow.data.prepared import PrepareConfig
from neuroflow.data.sources import DATASETS

DEFAULTS = PrepareConfig()


@click.command()
@click.option("--dataset", type=click.Choice(DATASETS), default=DEFAULTS.dataset, show_default=True)
@click.option(
    "--data-dir",
    default=DEFAULTS.data_dir,
    show_default=True,
    help="for dataset=idx, a folder or a .zip, .tar, .tar.gz or .tgz archive of IDX files; "
    "for the MNIST family, where it is downloaded to and read from",
)
@click.option("--val-fraction", type=cli.FRACTION, default=DEFAULTS.val_fraction, show_default=True)
@click.option(
    "--test-fraction",
    type=cli.FRACTION,
    default=DEFAULTS.test_fraction,
    show_default=True,
    help="used when the source has no official test split",
)
@click.option("--seed", type=cli.NON_NEGATIVE, default=DEFAULTS.seed, show_default=True)
@click.option(
    "--image-size", type=click.IntRange(8, 256), default=DEFAULTS.image_size, show_default=True
)
def preprocess(**options):
    """Prepare a dataset and log it as `prepared/`."""
    config = PrepareConfig(**options)
    if config.val_fraction + config.test_fraction >= 1:
        raise click.BadParameter(
            f"val_fraction + test_fraction = {config.val_fraction + config.test_fraction:g}; "
            "expected less than 1 so the train split keeps images",
            param_hint="'--val-fraction' / '--test-fraction'",
        )
    cli.check_data_dir(config.dataset, config.data_dir)
    from neuroflow.jobs.preprocess import preprocess as prepare_and_log

    with cli.step_run():
        prepare_and_log(config)


if __name__ == "__main__":
    cli.run(preprocess)
