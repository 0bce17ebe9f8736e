"""register: register a training run's model and point the challenger alias at it.

Not implemented yet."""

import click

from neuroflow import cli


@click.command()
def register():
    """Not implemented yet."""
    raise click.UsageError("register is not implemented yet")


if __name__ == "__main__":
    cli.run(register)
