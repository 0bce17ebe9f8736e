"""train_rnn: train a recurrent network that reads each image row by row.

An image of H rows is a sequence of H time steps of W pixels: 28 steps of 28 features at the
default size. Gradients are clipped (grad_clip, 1.0 by default). Produces the same logs as the
other classifiers: the logged model `model` (pyfunc: raw (B, H, W) pixels in, (B,) class ids
out), per-epoch train_loss, val_loss and val_accuracy, test_accuracy and test_loss, and plots/.
"""

from dataclasses import asdict

from neuroflow import cli
from neuroflow.families import RNNConfig
from neuroflow.settings import TRAINING, Inputs, TrainConfig


@cli.command(Inputs, TRAINING["rnn"], RNNConfig)
def train_rnn(inputs: Inputs, training: TrainConfig, model: RNNConfig):
    """Train the RNN and log it as `model`."""
    cli.launch(training.nproc, training.device)
    from neuroflow.jobs.train_classifier import train_classifier

    with cli.step_run(system_metrics=True):
        train_classifier("rnn", model, training, **asdict(inputs))


if __name__ == "__main__":
    cli.run(train_rnn)
