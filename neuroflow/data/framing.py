"""Digits framed as MNIST's were made (LeCun et al.): each digit cropped to its ink, its longer
side scaled to 20 of 28 pixels with the aspect kept, then placed so that its centre of mass sits
at the centre of the frame. scikit-learn's 8x8 digits fill their frame edge to edge; stretched to
28x28 they look nothing like a handwritten MNIST digit, and a model trained on them misreads one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BOX = 20 / 28  # the share of the frame a digit's longer side takes in MNIST
FRAMINGS = ("mnist", "none", "pad", "crop")
FITS = ("pad", "crop")  # how a team's own pictures are brought to the frame: the setting `fit`
CHANNELS = (1, 3)  # grey, or red-green-blue
LUMA = (19595, 38470, 7471)  # ITU-R 601-2 in 16-bit fixed point, as Pillow's convert("L")


@dataclass(frozen=True)
class InputRule:
    """How an image of any size becomes a model's input, the same for the images a model
    trained on (preprocess), the images it scores (predict, arrays and picture files alike)
    and those it is served: each model carries the rule of its data.

    Images are (N, H, W) grey or (N, H, W, 3) red-green-blue, channels last, pixels 0..255.

    1. An image is brought to the rule's `channels`: colour to grey by its luma (ITU-R 601-2,
       L = 0.299 R + 0.587 G + 0.114 B, rounded as Pillow rounds it), grey to colour by
       repeating it in each channel.
    2. With invert_light_background, an image whose border is light on average (dark ink on
       paper) is inverted, so ink is white on black as in MNIST.
    3. An image at size x size is taken as it is. Any other is framed as MNIST's digits were
       (framing "mnist": cropped to its ink, fitted to 20/28 of the frame, centred on its
       centre of mass), resized, antialiased bilinear (framing "none"), fitted whole into the
       frame with its aspect kept, antialiased bilinear, centred, and the rest of the frame
       black (framing "pad": a team's own pictures, of any size and shape), or scaled until
       its shorter side fills the frame, its aspect kept, and cut to the frame about its
       centre (framing "crop").
    """

    size: int
    framing: str = "none"
    invert_light_background: bool = False
    channels: int = 1

    @classmethod
    def for_source(
        cls, dataset: str, size: int, mnist_framing: bool, channels: int = 1, fit: str = "pad"
    ) -> InputRule:
        """The digits are framed (unless mnist_framing is off); a team's pictures (a folder's,
        a table's) are fitted by `fit` (pad or crop); every other source, MNIST-like, is
        resized."""
        if dataset in ("folder", "parquet", "delta"):  # a team's own pictures
            return cls(size, fit, channels=channels)
        framed = mnist_framing and dataset == "digits"
        return cls(size, "mnist" if framed else "none", framed, channels)

    @classmethod
    def legacy(cls, size: int) -> InputRule:
        """The rule of a model logged before models carried one: predict framed every picture
        as a digit."""
        return cls(size, "mnist", invert_light_background=True)

    @classmethod
    def from_dict(cls, value: dict | None, size: int) -> InputRule:
        return cls(**value) if value else cls.legacy(size)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def shape(self) -> tuple[int, ...]:
        """One image's shape out of the rule: (size, size), or (size, size, 3) in colour."""
        frame = (self.size, self.size)
        return frame if self.channels == 1 else (*frame, self.channels)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) or (N, H, W, 3) pixels 0..255 -> (N, *self.shape). Images left as they
        are keep their dtype; those the rule changes come back uint8."""
        images = np.asarray(images)
        grey = images.ndim == 3
        if self.channels == 1 and not grey:
            images, grey = to_grey(images), True
        if self.invert_light_background and len(images) and grey:
            light = _border_mean(images) > 127
            if light.any():
                images = images.astype(np.float32 if images.dtype != np.uint8 else np.uint8)
                images[light] = 255 - images[light]
        if images.shape[1:3] != (self.size, self.size):
            pixels = np.clip(np.rint(images), 0, 255).astype(np.uint8)
            if self.framing == "mnist" and grey:
                images = frame_like_mnist(pixels, self.size)
            else:
                fit = {"pad": fit_and_pad, "crop": fit_and_crop}.get(self.framing, resize)
                images = fit(pixels, self.size)
        if self.channels != 1 and grey:  # repeated once framed: a third of the work
            images = np.repeat(images[..., None], self.channels, axis=-1)
        return images


def to_grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) pixels 0..255 -> (N, H, W) uint8 luma, as Pillow's convert("L")."""
    pixels = np.clip(np.rint(images), 0, 255).astype(np.uint32)
    luma = pixels[..., 0] * LUMA[0] + pixels[..., 1] * LUMA[1] + pixels[..., 2] * LUMA[2]
    return ((luma + 0x8000) >> 16).astype(np.uint8)


def channels_of(images: np.ndarray) -> int:
    """1 for (N, H, W) grey images, C for (N, H, W, C)."""
    return 1 if np.ndim(images) == 3 else int(np.shape(images)[-1])


def _border_mean(images: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N,): the mean of each image's outermost pixels."""
    border = np.concatenate(
        [images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1
    )
    return border.astype(np.float64).mean(axis=1)


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


def scale(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, *shape) or (N, *shape, C) uint8, antialiased
    bilinear."""
    if images.shape[1:3] == tuple(shape):
        return images
    import torch
    import torch.nn.functional as F

    batch = torch.from_numpy(np.ascontiguousarray(images)).float()
    batch = batch.unsqueeze(1) if images.ndim == 3 else batch.permute(0, 3, 1, 2)  # (N, C, H, W)
    out = F.interpolate(batch, size=shape, mode="bilinear", antialias=True, align_corners=False)
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return (out.squeeze(1) if images.ndim == 3 else out.permute(0, 2, 3, 1)).numpy()


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N, size, size[, C]) uint8, antialiased bilinear."""
    return scale(images, (size, size))


def fit_and_pad(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N, size, size[, C]) uint8: each image scaled, antialiased
    bilinear, until its longer side is `size`, its aspect kept, and centred on black."""
    height, width = images.shape[1:3]
    ratio = size / max(height, width)
    fitted = (max(1, round(height * ratio)), max(1, round(width * ratio)))
    framed = np.zeros((len(images), size, size, *images.shape[3:]), np.uint8)
    top, left = (size - fitted[0]) // 2, (size - fitted[1]) // 2
    framed[:, top : top + fitted[0], left : left + fitted[1]] = scale(images, fitted)
    return framed


def fit_and_crop(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N, size, size[, C]) uint8: each image scaled, antialiased
    bilinear, until its shorter side is `size`, its aspect kept, then cut to size x size about
    its centre."""
    height, width = images.shape[1:3]
    ratio = size / min(height, width)
    fitted = (max(size, round(height * ratio)), max(size, round(width * ratio)))
    top, left = (fitted[0] - size) // 2, (fitted[1] - size) // 2
    return scale(images, fitted)[:, top : top + size, left : left + size].copy()
