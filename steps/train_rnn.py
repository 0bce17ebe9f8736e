"""train_rnn: train a recurrent network that reads each image row by row.

An image of H rows is a sequence of H time steps of W pixels: 28 steps of 28 features at the
default size. Gradients are clipped (grad_clip, 1.0 by default). Produces the same logs as the
other classifiers: the logged model `model` (pyfunc: raw (B, H, W) pixels in, (B,) class ids
out), per-epoch train_loss, val_loss and val_accuracy, test_accuracy and test_loss, and plots/.
"""

import click

from neuroflow import cli
from neuroflow.models.configs import RNN_CELLS, RNNConfig
from neuroflow.training.config import TrainConfig

DEFAULTS = RNNConfig()


@click.command()
@cli.training_options(grad_clip=1.0, batch_size=64)  # smaller batches: more steps on small data
@click.option("--cell", type=click.Choice(RNN_CELLS), default=DEFAULTS.cell, show_default=True)
@click.option("--hidden-size", type=cli.POSITIVE, default=DEFAULTS.hidden_size, show_default=True)
@click.option("--num-layers", type=cli.POSITIVE, default=DEFAULTS.num_layers, show_default=True)
@click.option(
    "--bidirectional",
    type=click.BOOL,
    default=str(DEFAULTS.bidirectional).lower(),
    show_default=True,
    help="also read the rows bottom to top",
)
@click.option("--dropout", type=cli.DROPOUT, default=DEFAULTS.dropout, show_default=True)
def train_rnn(
    data, cell, hidden_size, num_layers, bidirectional, dropout, resume_from, resume, **training
):
    """Train the RNN and log it as `model`."""
    config = TrainConfig(**training)
    cli.launch(config.nproc, config.device)
    from neuroflow.jobs.train import train_classifier

    model = RNNConfig(cell, hidden_size, num_layers, bidirectional, dropout)
    with cli.step_run():
        train_classifier("rnn", model, config, data, resume_from=resume_from, resume=resume)


if __name__ == "__main__":
    cli.run(train_rnn)
