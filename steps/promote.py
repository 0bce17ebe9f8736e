"""promote: re-score challenger and champion on the test split and promote the better.

Not implemented yet."""

import click

from neuroflow import cli


@click.command()
def promote():
    """Not implemented yet."""
    raise click.UsageError("promote is not implemented yet")


if __name__ == "__main__":
    cli.run(promote)
