"""train_rnn: train an LSTM/GRU classifier that reads each image row by row.

Not implemented yet."""

import click

from neuroflow import cli


@click.command()
def train_rnn():
    """Not implemented yet."""
    raise click.UsageError("train_rnn is not implemented yet")


if __name__ == "__main__":
    cli.run(train_rnn)
