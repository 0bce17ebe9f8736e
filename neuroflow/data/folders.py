"""A team's own pictures, in a folder by class: torchvision's ImageFolder layout.

    <data_dir>/<class>/<image>                     split into train, val and test by fraction
    <data_dir>/{train,val,test}/<class>/<image>    the given splits (val and test optional)

Class names are the folder names, sorted; every class needs an image in the training pool and
there must be two classes or more. Images are PNG, JPEG, BMP or WebP files, at any size, in any
of these modes, each read as grey or as colour (red, green, blue: 8 bits each):

    grey     L as it is; 1 (bilevel) as 0 or 255; I;16 its top 8 bits; I and F (32-bit)
             clipped to 0..255; LA, and P with a grey palette, over white (see-through is paper)
    colour   RGB as it is; RGBA, and P with a coloured palette, over white; CMYK, YCbCr, LAB
             and HSV converted to RGB

The setting `channels` says what the prepared images are. auto: colour (3 channels) when any
picture is in colour, grey pictures then repeated in each channel; else grey (1). 1: every
picture grey, colour ones by their luma (ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B, as
Pillow computes it). 3: every picture in colour. With channels fixed, a source that mixes grey
and colour pictures is refused: one of them is likely not what was meant.

Within a split, images are ordered by their file name, then their class: files named by a
running number keep the order they were written in. Nothing is decoded until prepare reads it,
a batch at a time, so memory stays flat whatever the folder's size. A class folder or an image
that is a link leading outside data_dir is refused, as is a file that is not a readable image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuroflow.errors import DataError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLITS = ("train", "val", "test")  # given splits; the pool of a folder without them is "train"
MIN_SIDE = 8  # pixels: below this a picture holds too little to learn from


class LazyImages:
    """(N, size, size[, 3]) uint8 images decoded only when indexed, each brought to the frame
    and to its channels by `rule` (neuroflow.data.framing.InputRule): an array to prepare's
    reader and to predict. A subclass says how to read one picture, grey or in colour, and
    what to call it in an error."""

    def __init__(self, count: int, rule):
        self.count, self.rule = count, rule

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.count, *self.rule.shape)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index) -> np.ndarray:
        chosen = np.arange(len(self))[index]
        rows = np.atleast_1d(chosen)
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for place, row in enumerate(rows):
            out[place] = self.rule.apply(self.picture(int(row))[None])[0]
        return out if np.ndim(chosen) else out[0]

    def picture(self, row: int) -> np.ndarray:
        """Picture `row` as it is: (H, W) uint8 grey or (H, W, 3) colour, at its own size."""
        raise NotImplementedError

    def is_colour(self, row: int) -> bool:
        """Whether picture `row` is in colour, read from as little of it as tells."""
        raise NotImplementedError

    def name(self, row: int) -> str:
        """Picture `row` as an error names it."""
        raise NotImplementedError


class Pictures(LazyImages):
    """A folder's picture files, in the order given."""

    def __init__(self, files: list[Path], rule):
        super().__init__(len(files), rule)
        self.files = files

    def picture(self, row: int) -> np.ndarray:
        return read_picture(self.files[row])

    def is_colour(self, row: int) -> bool:
        return opened(self.files[row], self.name(row), in_colour)

    def name(self, row: int) -> str:
        return str(self.files[row])


def channels_for(images: list, wanted: str, where: str) -> int:
    """The channels prepared images get (see the module): `wanted` ("auto", "1" or "3") and
    what `images` hold (LazyImages, or arrays of (N, H, W) grey or (N, H, W, 3) colour),
    scanned a picture's header at a time. Refuses a mix when channels is fixed."""
    first = {}  # True (colour) or False (grey) -> the first picture of that kind: its name

    def known() -> bool:  # a mix found, or under auto one colour picture: the answer is known
        return len(first) == 2 or (wanted == "auto" and True in first)

    for block in images:
        if not isinstance(block, LazyImages):  # arrays: one kind throughout
            first.setdefault(np.ndim(block) == 4, f"{where} ({np.shape(block)} array)")
            continue
        for row in range(len(block)):
            first.setdefault(block.is_colour(row), block.name(row))
            if known():
                break
    grey, colour = first.get(False), first.get(True)
    if wanted == "auto":
        return 3 if colour else 1
    if grey and colour:
        raise DataError(
            f"channels={wanted}, but {colour} is in colour and {grey} is grey; expected "
            "pictures all grey or all in colour when channels is fixed, or channels=auto"
        )
    return int(wanted)


def read_picture(path: Path) -> np.ndarray:
    """One picture as (H, W) uint8 grey or (H, W, 3) colour, by the module's rule."""
    return picture_from(path, str(path))


def picture_from(file, where: str) -> np.ndarray:
    """A picture file (a path or a binary stream) as (H, W) uint8 grey or (H, W, 3) colour, by
    the module's rule for its mode; errors name `where`."""
    pixels = opened(file, where, _pixels)
    if min(pixels.shape[:2]) < MIN_SIDE:
        raise DataError(
            f"{where} is {pixels.shape[1]}x{pixels.shape[0]} pixels; expected at least "
            f"{MIN_SIDE}x{MIN_SIDE}"
        )
    return pixels


def opened(file, where: str, read):
    """read(image) of the picture file `file` opened by Pillow; errors name `where`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return read(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{where} cannot be read as an image ({reason}); expected a PNG, JPEG, BMP or "
            "WebP picture"
        ) from None


GREY_MODES = ("1", "L", "LA", "I", "F")  # and I;16 and its kin


def in_colour(image) -> bool:
    """Whether a Pillow image is in colour by its mode (and a palette's colours): its header
    tells, so nothing is decoded."""
    if image.mode.startswith("I;16") or image.mode in GREY_MODES:
        return False
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
        return bool((palette != palette[:, :1]).any())
    return True


def _pixels(image) -> np.ndarray:
    from PIL import Image

    image.load()  # a truncated file fails here, not later
    colour, mode = in_colour(image), image.mode
    if mode.startswith("I;16"):
        return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
    if mode in ("I", "F"):
        return np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
    if mode in ("P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "RGBa", "La"):
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    return np.asarray(image.convert("RGB" if colour else "L"), dtype=np.uint8)


def open_folder(folder: Path, rule) -> tuple[list[str], list[tuple[str, Pictures, np.ndarray]]]:
    """The classes of `folder` and its splits: (split, pictures, labels) for each given split,
    or one ("", ...) for a pool to split by fraction. Raises a one-line DataError for a folder
    that is not in the layout."""
    if not folder.is_dir():
        raise DataError(f"data_dir {folder} does not exist or is not a folder")
    root = folder.resolve()
    given = [s for s in SPLITS if (folder / s).is_dir()]
    if given and "train" not in given:
        raise DataError(
            f"data_dir {folder} has {', '.join(given)}/ but no train/; expected train/ beside "
            "them, or class folders alone"
        )
    homes = {s: folder / s for s in given} or {"": folder}
    listed = {split: _class_files(home, root) for split, home in homes.items()}
    classes = sorted({name for files in listed.values() for name in files})
    pool = listed.get("train", listed.get(""))
    empty = [name for name in classes if not pool.get(name)]
    if empty:
        where = homes.get("train", folder)
        raise DataError(
            f"class folder {where / empty[0]} holds no images; expected PNG, JPEG, BMP or WebP "
            "pictures in every class folder"
        )
    if len(classes) < 2:
        found = f"only class {classes[0]!r}" if classes else "no class folders"
        raise DataError(
            f"data_dir {folder} has {found}; expected a folder per class, two or more, each "
            "holding its pictures"
        )
    splits = []
    for split, files in listed.items():
        ordered = sorted(
            (path.name, classes.index(name), path)
            for name, paths in files.items()
            for path in paths
        )
        labels = np.array([label for _, label, _ in ordered], np.int64)
        splits.append((split, Pictures([path for _, _, path in ordered], rule), labels))
    return classes, splits


def _class_files(home: Path, root: Path) -> dict[str, list[Path]]:
    """Each class folder under `home` -> its picture files (in subfolders too), each checked to
    lie inside `root` once links are followed."""
    classes = {}
    for entry in sorted(home.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue  # hidden files, and files beside the class folders (a README)
        _inside(entry, root)
        files = []
        for path in sorted(entry.rglob("*")):
            if path.name.startswith(".") or path.is_dir():
                continue
            _inside(path, root)
            if path.suffix.lower() not in SUFFIXES:
                raise DataError(
                    f"{path} is not a picture file; expected only PNG, JPEG, BMP or WebP "
                    f"files ({', '.join(SUFFIXES)}) in class folders"
                )
            files.append(path)
        classes[entry.name] = files
    return classes


def _inside(path: Path, root: Path) -> None:
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise DataError(
            f"{path} leads to {resolved}, outside data_dir {root}; expected the pictures "
            "inside data_dir"
        )
