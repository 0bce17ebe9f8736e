"""train_cnn: train the convolutional network on a prepared dataset.

Produces the logged model `model` (pyfunc: raw (B, H, W) pixels in, (B,) class ids out), the
per-epoch metrics train_loss, val_loss and val_accuracy, test_accuracy and test_loss, and
plots/loss_curve.png and plots/confusion_matrix.png.
"""

import click

from neuroflow import cli
from neuroflow.models.configs import CNNConfig
from neuroflow.training.config import TrainConfig

DEFAULTS = CNNConfig()


@click.command()
@cli.training_options()
@click.option(
    "--channels",
    default=cli.joined(DEFAULTS.channels),
    show_default=True,
    callback=cli.int_list,
    help="output channels of each conv block; each block halves the image",
)
@click.option("--dropout", type=cli.DROPOUT, default=DEFAULTS.dropout, show_default=True)
def train_cnn(data, channels, dropout, resume_from, resume, **training):
    """Train the CNN and log it as `model`."""
    config = TrainConfig(**training)
    cli.launch(config.nproc, config.device)
    from neuroflow.jobs.train import train_classifier

    model = CNNConfig(channels=channels, dropout=dropout)
    with cli.step_run():
        train_classifier("cnn", model, config, data, resume_from=resume_from, resume=resume)


if __name__ == "__main__":
    cli.run(train_cnn)
