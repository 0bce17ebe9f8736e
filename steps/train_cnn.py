"""train_cnn: train the convolutional network on a prepared dataset.

Produces the logged model `model` (pyfunc: raw (B, H, W) pixels in, (B,) class ids out), the
per-epoch metrics train_loss, val_loss and val_accuracy, test_accuracy and test_loss, and
plots/loss_curve.png and plots/confusion_matrix.png.
"""

from dataclasses import asdict

from neuroflow import cli
from neuroflow.families import CNNConfig
from neuroflow.settings import TRAINING, Inputs, TrainConfig


@cli.command(Inputs, TRAINING["cnn"], CNNConfig)
def train_cnn(inputs: Inputs, training: TrainConfig, model: CNNConfig):
    """Train the CNN and log it as `model`."""
    cli.launch(training.nproc, training.device)
    from neuroflow.jobs.train_classifier import train_classifier

    with cli.step_run(system_metrics=True):
        train_classifier("cnn", model, training, **asdict(inputs))


if __name__ == "__main__":
    cli.run(train_cnn)
