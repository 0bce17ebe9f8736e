"""Plots logged as artifacts of the active run: loss curves, a confusion matrix, sample grids."""

from __future__ import annotations

import mlflow
import numpy as np

# Fixed margins, as fractions of the figure: constrained layout measures every tick label
# first, which doubled the time of a plot.
CURVES = {"left": 0.07, "right": 0.98, "bottom": 0.15, "top": 0.9, "wspace": 0.25}
MATRIX = {"left": 0.16, "right": 0.97, "bottom": 0.16, "top": 0.93}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    return Figure(figsize=(width, height))


def log_loss_curves(history: list[dict[str, float]], path: str = "plots/loss_curve.png") -> None:
    epochs = range(1, len(history) + 1)
    figure = _figure(9, 3.5)
    losses, accuracy = figure.subplots(1, 2, gridspec_kw=CURVES)
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
    axes = figure.subplots(gridspec_kw=MATRIX)
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=45, ha="right")
    axes.set_yticks(ticks, classes)
    axes.set(xlabel="predicted", ylabel="true", title="test confusion matrix")
    threshold = matrix.max() / 2
    for row, col in zip(*np.nonzero(matrix), strict=True):  # an empty cell reads as 0 unwritten
        count = matrix[row, col]
        color = "white" if count > threshold else "black"
        axes.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
    mlflow.log_figure(figure, path)


def grid(pixels: np.ndarray, columns: int = 8, gap: int = 2) -> np.ndarray:
    """(N, H, W) grey or (N, H, W, C) colour pixels in 0..255 as one (rows, columns) grid of
    uint8 pixels, `gap` white pixels around and between the images, as torchvision's make_grid
    lays them out (without importing torchvision: a second of a step's start)."""
    count, height, width = pixels.shape[:3]
    columns = min(columns, count)
    rows = -(-count // columns)
    size = (rows * (height + gap) + gap, columns * (width + gap) + gap, *pixels.shape[3:])
    out = np.full(size, 255, np.uint8)
    for index, image in enumerate(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)):
        top, left = (
            gap + (index // columns) * (height + gap),
            gap + (index % columns) * (width + gap),
        )
        out[top : top + height, left : left + width] = image
    return out


def log_grid(pixels, path: str, columns: int = 8) -> None:
    """Log (N, H, W[, C]) pixels in 0..255 (a tensor or an array) as one PNG grid."""
    pixels = pixels.cpu().numpy() if hasattr(pixels, "cpu") else np.asarray(pixels)
    mlflow.log_image(grid(pixels, columns), artifact_file=path)


def log_gan_curves(curves: list[dict[str, float]], path: str = "plots/gan_curves.png") -> None:
    """The losses of every epoch, and the scores of the epochs that were scored; curves[i] is
    epoch i + 1's."""
    epochs = range(1, len(curves) + 1)
    scored = [(epoch, c) for epoch, c in zip(epochs, curves, strict=True) if "fid" in c]
    at = [epoch for epoch, _ in scored]
    figure = _figure(13, 3.5)
    losses, distance, coverage = figure.subplots(1, 3, gridspec_kw=CURVES)
    for key in ("d_loss", "g_loss"):
        losses.plot(epochs, [c[key] for c in curves], label=key)
    losses.set(xlabel="epoch", title="losses")
    losses.legend()
    distance.plot(at, [c["fid"] for _, c in scored], marker="o", color="tab:red")
    distance.set(xlabel="epoch", title="fid (lower is better)")
    coverage.plot(at, [c["class_coverage"] for _, c in scored], marker="o", label="coverage")
    coverage.plot(at, [c["inception_score"] / 10 for _, c in scored], marker="o", label="IS / 10")
    coverage.set(xlabel="epoch", title="class coverage, inception score", ylim=(0, 1.05))
    coverage.legend()
    mlflow.log_figure(figure, path)
