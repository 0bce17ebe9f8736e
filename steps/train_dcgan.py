"""train_dcgan: train a DCGAN and score it by FID in a classifier's feature space.

Not implemented yet."""

import click

from neuroflow import cli


@click.command()
def train_dcgan():
    """Not implemented yet."""
    raise click.UsageError("train_dcgan is not implemented yet")


if __name__ == "__main__":
    cli.run(train_dcgan)
