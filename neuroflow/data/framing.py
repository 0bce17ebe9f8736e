"""Digits framed as MNIST's were made (LeCun et al.): each digit cropped to its ink, its longer
side scaled to 20 of 28 pixels with the aspect kept, then placed so that its centre of mass sits
at the centre of the frame. scikit-learn's 8x8 digits fill their frame edge to edge; stretched to
28x28 they look nothing like a handwritten MNIST digit, and a model trained on them misreads one.
"""

from __future__ import annotations

import numpy as np

BOX = 20 / 28  # the share of the frame a digit's longer side takes in MNIST


def frame_like_mnist(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) uint8 -> (N, size, size) uint8, each digit cropped, fitted and centred."""
    import torch
    import torch.nn.functional as F

    framed = np.zeros((len(images), size, size), np.uint8)
    longest = round(size * BOX)
    for index, image in enumerate(images):
        rows, cols = np.nonzero(image)
        if not len(rows):  # a blank image stays blank
            continue
        ink = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        scale = longest / max(ink.shape)
        height, width = (max(1, round(side * scale)) for side in ink.shape)
        pixels = torch.from_numpy(ink).float()[None, None]  # (1, 1, h, w)
        scaled = F.interpolate(
            pixels, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )
        digit = scaled[0, 0].clamp_(0, 255).numpy()
        top, left = centred(digit, size)
        framed[index, top : top + height, left : left + width] = np.rint(digit)
    return framed


def centred(digit: np.ndarray, size: int) -> tuple[int, int]:
    """Where to place `digit` (h, w) in a size x size frame so that its centre of mass falls
    on the frame's centre, as near as whole pixels and the frame's edges allow."""
    mass = digit.sum()
    row = (digit.sum(axis=1) @ np.arange(digit.shape[0])) / mass
    col = (digit.sum(axis=0) @ np.arange(digit.shape[1])) / mass
    middle = (size - 1) / 2
    top = int(np.clip(round(middle - row), 0, size - digit.shape[0]))
    left = int(np.clip(round(middle - col), 0, size - digit.shape[1]))
    return top, left
