"""Images to score, from wherever a user keeps them: a folder or archive of IDX files, a
preprocess run (its test split), a .npy array of (N, H, W) grey or (N, H, W, 3) colour pixels,
a folder of pictures of any size (labelled by their folders when these are named after the
model's classes, and read grey or in colour as preprocess reads them: neuroflow.data.folders),
or a Parquet table of them. Each is read a batch at a time (IDX
files and arrays memory-mapped), so scoring a large set keeps memory flat. Every image comes
out at the model's size by the model's own input rule (neuroflow.data.framing.InputRule), the
same for arrays and picture files: the same images give the same predictions whichever way
they come.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuroflow.data import archives
from neuroflow.data.folders import SUFFIXES, Pictures
from neuroflow.data.framing import InputRule
from neuroflow.errors import DataError


@dataclass
class Inputs:
    uri: str  # where they were read from, as the dataset source
    name: str
    count: int
    labels: np.ndarray | None  # (N,) class ids, when the source has them
    read: Callable[[int, int], np.ndarray]  # (start, stop) -> (stop - start, H, W[, C]) uint8
    ids: Callable[[int, int], list[str]]  # (start, stop) -> an id or path per image
    keep: object = None  # what must live while images are read (an unpacked archive)

    def batches(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.count, size):
            yield start, self.read(start, min(start + size, self.count))


def open_inputs(
    data: str,
    rule: InputRule,
    open_run=None,
    classes: list[str] | None = None,
    columns: tuple[str, str] = ("image", "label"),
) -> Inputs:
    """The images `data` names, brought to a model's input by its `rule`. `open_run(run_id)`
    gives a preprocess run's Prepared data (a run id is tried only when `data` is not a path),
    whose images the same rule has prepared already. A folder of pictures in folders
    named after the model's `classes` is labelled by them; a Parquet table by its label column
    where it has one (its image and label `columns`)."""
    path = Path(data).expanduser()
    if not path.exists():
        if open_run is not None and _is_run_id(data):
            return _prepared(open_run(data), data, rule)
        raise DataError(
            f"data {data!r} does not exist; expected a folder or archive of IDX files, a "
            "preprocess run id, a .npy file, a folder of pictures or a Parquet table"
        )
    if path.suffix == ".npy":
        return _array(path, rule)
    if path.is_dir() and _pictures(path):
        return _pictures_folder(path, rule, classes or [])
    if path.suffix == ".parquet" or path.is_dir() and any(path.rglob("*.parquet")):
        return _table(path, rule, classes or [], *columns)
    if path.is_dir() or archives.is_archive(path):
        return _idx(path, rule)
    raise DataError(
        f"data {data!r} is a file that is neither a .npy array nor an archive of IDX files"
    )


def _is_run_id(value: str) -> bool:
    from neuroflow.uris import RUN_ID

    return bool(RUN_ID.match(value))


def _indices(prefix: str) -> Callable[[int, int], list[str]]:
    return lambda start, stop: [f"{prefix}{i}" for i in range(start, stop)]


def _array(path: Path, rule: InputRule) -> Inputs:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"data {path}: not a readable .npy array ({error})") from None
    colour = array.ndim == 4 and array.shape[-1] == 3
    if not (array.ndim == 3 or colour) or not np.issubdtype(array.dtype, np.number):
        raise DataError(
            f"data {path} holds a {array.dtype} array of shape {array.shape}; expected "
            "(N, H, W) grey or (N, H, W, 3) colour pixel values in 0..255"
        )
    return Inputs(
        str(path.resolve()),
        path.stem,
        len(array),
        None,
        lambda start, stop: rule.apply(array[start:stop]),
        _indices(""),
    )


def _prepared(prepared, run_id: str, rule: InputRule) -> Inputs:
    """The test split of a preprocess run's data (a neuroflow.data.prepared.Prepared)."""
    if InputRule.from_dict(prepared.input_rule, prepared.image_shape[0]) != rule:
        raise DataError(
            f"data {run_id} was prepared by the input rule {prepared.input_rule}; the model's "
            f"is {rule.to_dict()}: expected data prepared as the model's training data was"
        )
    images, labels = prepared.images["test"], np.asarray(prepared.labels["test"])
    return Inputs(
        f"runs:/{run_id}/prepared",
        f"{prepared.meta['dataset']}-test",
        len(images),
        labels,
        lambda start, stop: np.asarray(images[start:stop]),
        _indices("test/"),
    )


def _idx(path: Path, rule: InputRule) -> Inputs:
    from neuroflow.data.sources import load_source

    source = load_source("idx", str(path))
    parts = source.parts
    ends = np.cumsum([len(p.images) for p in parts])

    def read(start: int, stop: int) -> np.ndarray:
        blocks = []
        for part, end in zip(parts, ends, strict=True):
            begin = end - len(part.images)
            low, high = max(start, begin), min(stop, end)
            if low < high:
                blocks.append(part.images[low - begin : high - begin])
        return rule.apply(np.concatenate(blocks))

    return Inputs(
        str(path.resolve()),
        path.name,
        int(ends[-1]),
        np.concatenate([np.asarray(p.labels) for p in parts]),
        read,
        _indices(""),
        keep=source,
    )


def _pictures(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def _pictures_folder(folder: Path, rule: InputRule, classes: list[str]) -> Inputs:
    files = _pictures(folder)
    pictures = Pictures(files, rule)
    return Inputs(
        str(folder.resolve()),
        folder.name,
        len(files),
        class_labels(folder, files, classes),
        lambda start, stop: pictures[start:stop],
        lambda start, stop: [str(f.relative_to(folder)) for f in files[start:stop]],
    )


def class_labels(folder: Path, files: list[Path], classes: list[str]) -> np.ndarray | None:
    """(N,) class ids of `files` from the folder each lies in under `folder`, when those
    folders are named after the model's `classes`; None when no folder is. A mix is refused."""
    tops = [f.relative_to(folder).parts[0] if f.parent != folder else None for f in files]
    named = {top for top in tops if top in classes}
    if not named:
        return None
    others = sorted({top or "." for top in tops if top not in classes})
    if others:
        where = "pictures outside class folders" if "." in others else f"folder {others[0]!r}"
        raise DataError(
            f"data {folder} has folders named after the model's classes, and {where}; expected "
            f"every picture in a folder named after one of its classes ({', '.join(classes)}), "
            "or none"
        )
    return np.array([classes.index(top) for top in tops], np.int64)


def _table(path: Path, rule: InputRule, classes: list[str], image: str, label: str) -> Inputs:
    """A Parquet table's pictures (neuroflow.data.tables), labelled by its label column where it
    has one: class ids of the model's, or names of its classes."""
    from neuroflow.data.tables import TableImages, read_labels, table_files

    where = f"data {path}"
    files = table_files(path, where)
    raw = read_labels(files, image, label, where, required=False)
    labels = None
    if raw is not None:
        known = {name: index for index, name in enumerate(classes)}
        ids = raw if np.issubdtype(raw.dtype, np.integer) else None
        if ids is None:
            unknown = sorted(set(raw.tolist()) - set(known))
            if unknown:
                raise DataError(
                    f"{where}: label {unknown[0]!r} is not a class of the model; expected one "
                    f"of {', '.join(classes)}"
                )
            ids = np.array([known[name] for name in raw], np.int64)
        elif len(ids) and ids.max() >= len(classes):
            raise DataError(
                f"{where}: label {int(ids.max())} is not a class id of the model; expected 0 to "
                f"{len(classes) - 1}"
            )
        labels = ids.astype(np.int64)
    images = TableImages(files, image, rule, where)
    return Inputs(
        path.resolve().as_uri(),
        path.stem,
        len(images),
        labels,
        lambda start, stop: images[start:stop],
        _indices("row "),
    )
