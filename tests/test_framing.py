"""The digits framed as MNIST's were made: cropped to the ink, fitted to 20 of 28 pixels,
centred by their centre of mass; and the small random affine moves of augment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from helpers import synthetic_digits
from neuroflow.data.framing import frame_like_mnist
from neuroflow.data.prepared import prepare
from neuroflow.data.sources import DIGIT_CLASSES, Part, Source
from neuroflow.settings import PrepareConfig
from neuroflow.training.classifier import augmented


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    mass = image.sum()
    rows, cols = np.indices(image.shape)
    return (rows * image).sum() / mass, (cols * image).sum() / mass


def test_a_digit_in_a_corner_is_fitted_to_20_pixels_and_centred():
    image = np.zeros((1, 8, 8), np.uint8)
    image[0, 0:4, 5:7] = 255  # a 4x2 stroke in the top right corner
    (framed,) = frame_like_mnist(image, 28)
    rows, cols = np.nonzero(framed)
    assert rows.max() - rows.min() + 1 == 20  # the longer side
    assert cols.max() - cols.min() + 1 == 10  # the aspect kept
    row, col = centre_of_mass(framed.astype(float))
    assert abs(row - 13.5) <= 0.5 and abs(col - 13.5) <= 0.5


def test_a_blank_image_stays_blank_and_the_size_is_followed():
    images = np.zeros((2, 8, 8), np.uint8)
    images[1, 2:6, 2:6] = 200
    framed = frame_like_mnist(images, 32)
    assert framed.shape == (2, 32, 32) and framed.dtype == np.uint8
    assert framed[0].max() == 0 and framed[1].max() > 150


@pytest.mark.parametrize(
    ("dataset", "framing", "framed"),
    [
        ("digits", True, True),
        ("digits", False, False),
        ("idx", True, False),  # MNIST-like sources are framed already
    ],
)
def test_preprocess_frames_the_digits_only_unless_told_not_to(tmp_path, dataset, framing, framed):
    image = np.zeros((30, 8, 8), np.uint8)
    image[:, 0:4, 5:7] = 255
    source = Source(dataset, "memory://", [Part(image, np.arange(30) % 10, "pool")], DIGIT_CLASSES)
    config = PrepareConfig(image_size=28, mnist_framing=framing, val_fraction=0.2)
    prepare(source, tmp_path, config)
    first = np.load(tmp_path / "train-images-00000.npy")[0]
    row, col = centre_of_mass(first.astype(float))
    assert (abs(row - 13.5) <= 0.5 and abs(col - 13.5) <= 0.5) == framed


def test_augment_moves_each_image_a_little_and_repeats_with_its_generator():
    images = torch.zeros(16, 28, 28, dtype=torch.uint8)
    images[:, 8:20, 12:16] = 255
    first = augmented(images, torch.Generator().manual_seed(0))
    again = augmented(images, torch.Generator().manual_seed(0))
    assert first.shape == (16, 28, 28) and first.dtype == torch.float32
    assert torch.equal(first, again)
    moved = (first - images.float()).abs().flatten(1).sum(1)
    assert (moved > 0).all()  # every image moved
    kept = first.flatten(1).sum(1) / images.float().flatten(1).sum(1)
    assert ((kept > 0.7) & (kept < 1.3)).all()  # a little: the digit stays in the frame


def test_colour_augment_reorders_and_inverts_channels_after_the_same_moves():
    """augment=colour: each image moved as augment=true moves it, then its channels in some
    order, inverted or not; over 64 images both happen and neither always."""
    images = torch.randint(0, 256, (64, 12, 12, 3), dtype=torch.uint8)
    moved = augmented(images, torch.Generator().manual_seed(3))
    recoloured = augmented(images, torch.Generator().manual_seed(3), colour=True)
    assert torch.equal(recoloured, augmented(images, torch.Generator().manual_seed(3), True))
    inverted = reordered = 0
    for before, after in zip(moved, recoloured, strict=True):
        matches = [
            (flip, order)
            for flip in (False, True)
            for order in itertools.permutations(range(3))
            if torch.allclose((255 - before if flip else before)[..., list(order)], after)
        ]
        assert matches, "not a reordering of the moved image's channels, inverted or not"
        inverted += matches[0][0]
        reordered += matches[0][1] != (0, 1, 2)
    assert 0 < inverted < 64 and 0 < reordered < 64
    grey = augmented(images[..., 0], torch.Generator().manual_seed(3), colour=True)
    assert grey.shape == (64, 12, 12)  # grey images: inverted or not


def test_an_input_rule_takes_images_at_its_size_as_they_are_and_brings_others_to_it():
    from neuroflow.data.framing import InputRule

    images, _ = synthetic_digits(3, size=28, seed=5)
    floats = images.astype(np.float32) + 0.25  # not whole grey levels: left untouched
    plain, digits = InputRule(28), InputRule.for_source("digits", 28, mnist_framing=True)
    assert np.array_equal(plain.apply(floats), floats)
    assert np.array_equal(digits.apply(images), images)  # dark backgrounds, at size
    assert np.array_equal(digits.apply(255 - images), images)  # light paper inverted
    small, _ = synthetic_digits(2, size=8, seed=6)
    assert np.array_equal(digits.apply(small), frame_like_mnist(small, 28))
    assert plain.apply(small).shape == (2, 28, 28)
    assert InputRule.from_dict(digits.to_dict(), 28) == digits
    assert InputRule.from_dict(None, 28) == InputRule.legacy(28)
