"""train_mlp: train the multilayer perceptron on a prepared dataset.

Produces the logged model `model` (pyfunc: raw (B, H, W) pixels in, (B,) class ids out), the
per-epoch metrics train_loss, val_loss and val_accuracy, test_accuracy and test_loss, and
plots/loss_curve.png and plots/confusion_matrix.png.
"""

from dataclasses import asdict

from neuroflow import cli
from neuroflow.families import MLPConfig
from neuroflow.settings import TRAINING, Inputs, TrainConfig


@cli.command(Inputs, TRAINING["mlp"], MLPConfig)
def train_mlp(inputs: Inputs, training: TrainConfig, model: MLPConfig):
    """Train the MLP and log it as `model`."""
    cli.launch(training.nproc, training.device)
    from neuroflow.jobs.train_classifier import train_classifier

    with cli.step_run(system_metrics=True):
        train_classifier("mlp", model, training, **asdict(inputs))


if __name__ == "__main__":
    cli.run(train_mlp)
