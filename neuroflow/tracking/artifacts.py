"""Plots and models logged as artifacts of the active run."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np

import neuroflow
from neuroflow.envs import read_pins

MODEL_NAME = "model"  # the name every trainer logs its model under
SERVING_PACKAGES = ("torch", "numpy", "mlflow")  # what a served model needs besides our code


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    return Figure(figsize=(width, height), layout="constrained")


def log_loss_curves(history: list[dict[str, float]], path: str = "plots/loss_curve.png") -> None:
    epochs = range(1, len(history) + 1)
    figure = _figure(9, 3.5)
    losses, accuracy = figure.subplots(1, 2)
    for key in ("train_loss", "val_loss"):
        losses.plot(epochs, [h[key] for h in history], marker="o", label=key)
    losses.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    losses.legend()
    accuracy.plot(epochs, [h["val_accuracy"] for h in history], marker="o", color="tab:green")
    accuracy.set(xlabel="epoch", ylabel="accuracy", title="val_accuracy")
    mlflow.log_figure(figure, path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), np.int64)  # rows: true class, cols: predicted
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def log_confusion_matrix(matrix: np.ndarray, classes: list[str], path="plots/confusion_matrix.png"):
    size = max(4.0, 0.55 * len(classes) + 1.5)
    figure = _figure(size, size)
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=45, ha="right")
    axes.set_yticks(ticks, classes)
    axes.set(xlabel="predicted", ylabel="true", title="test confusion matrix")
    threshold = matrix.max() / 2
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        axes.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
    mlflow.log_figure(figure, path)


def serving_requirements() -> list[str]:
    _, pins = read_pins()
    return [pin for pin in pins if pin.split("==")[0] in SERVING_PACKAGES]


def log_classifier(model, examples: np.ndarray):
    """Log an ImageClassifier: raw (B, H, W) float32 pixels in, (B,) int64 class ids out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    height, width = examples.shape[1:]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, height, width))]),
        outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
    )
    return mlflow.pytorch.log_model(
        model.cpu().eval(),
        name=MODEL_NAME,
        signature=signature,
        input_example=examples.astype(np.float32),
        code_paths=[str(Path(neuroflow.__file__).parent)],
        pip_requirements=serving_requirements(),
    )
