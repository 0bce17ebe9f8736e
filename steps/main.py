"""main: the whole pipeline, preprocess to promote, with a step cache.

Not implemented yet."""

import click

from neuroflow import cli


@click.command()
def main():
    """Not implemented yet."""
    raise click.UsageError("main is not implemented yet")


if __name__ == "__main__":
    cli.run(main)
