"""Where images come from: scikit-learn's digits, the torchvision MNIST family, IDX files in a
folder or an archive, or a team's pictures: in a folder by class (neuroflow.data.folders), in
a Parquet or Delta table (neuroflow.data.tables), or in a table read through Spark
(neuroflow.data.spark, which stages its two columns as Parquet files first).

A source yields parts, each a block of (N, H, W) grey or (N, H, W, 3) colour uint8 images with
(N,) labels, marked as the official test split, a given validation split, or neither. Its
`channels` are those its prepared images get (neuroflow.data.folders.channels_for). Parts may
be memory-mapped or read from files as they are indexed; nothing else here copies them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from neuroflow.data import archives, folders, idx, tables
from neuroflow.data.folders import LazyImages, channels_for
from neuroflow.data.framing import InputRule
from neuroflow.errors import DataError

DIGIT_CLASSES = [str(d) for d in range(10)]
# dataset name -> (torchvision class name, class names)
TORCHVISION = {
    "mnist": ("MNIST", DIGIT_CLASSES),
    "fashion-mnist": (
        "FashionMNIST",
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
        + ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    ),
    "kmnist": ("KMNIST", ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]),
}
# checked at the door: click.Choice(DATASETS)
DATASETS = ("digits", *TORCHVISION, "idx", "folder", "parquet", "delta", "table")
# read from data_dir as it is, and named after it; for table, data_dir is a table's name
FOLDERS = ("idx", "folder", "parquet", "delta", "table")


@dataclass
class Part:
    images: np.ndarray  # (N, H, W) or (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) integer class ids
    origin: str
    official_test: bool = False
    validation: bool = False  # a given validation split, used as it is


@dataclass
class Source:
    name: str  # the kind of source: digits, mnist, ..., idx
    uri: str  # where the images were read from, recorded as the dataset source
    parts: list[Part]
    classes: list[str]
    # Which dataset it is: `name`, or for idx the folder's or the archive's name. Models are
    # named after it, and promote compares only versions trained on the same one.
    title: str = ""
    # An unpacked archive the parts are memory-mapped from; removed when the Source is.
    unpacked: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    channels: int = 1  # 1 (grey) or 3 (colour): what its prepared images get

    @property
    def native_shape(self) -> tuple[int, int]:
        return self.parts[0].images.shape[1:3]

    @property
    def has_official_test(self) -> bool:
        return any(p.official_test for p in self.parts)


def load_source(
    name: str,
    data_dir: str,
    rule: InputRule | None = None,
    columns: tuple[str, str] = ("image", "label"),
    channels: str = "auto",
) -> Source:
    """Open dataset `name`; `data_dir` is where torchvision data lives, the IDX folder or
    archive, the folder of pictures or the Parquet table (whose image and label `columns` are
    given). `channels` ("auto", "1" or "3") says what its prepared images get. Pictures come
    out brought to the frame and to those channels by `rule` as they are read (default: 28
    pixels, fitted and padded)."""
    source = _opened(name, Path(data_dir).expanduser(), rule or InputRule(28, "pad"), columns)
    images = [part.images for part in source.parts]
    source.channels = channels_for(images, channels, f"data_dir {data_dir}")
    for lazy in (block for block in images if isinstance(block, LazyImages)):
        lazy.rule = replace(lazy.rule, channels=source.channels)
    return source


def _opened(name: str, path: Path, rule: InputRule, columns: tuple[str, str]) -> Source:
    if name == "digits":
        return _digits()
    if name == "folder":
        return _pictures(path, rule)
    if name in ("parquet", "delta"):
        return _table(path, rule, *columns, delta=name == "delta")
    if name == "table":
        return _spark_table(str(path), rule, *columns)
    path = path.resolve()
    if name in TORCHVISION:
        return _torchvision(name, path)
    if name == "idx":
        source = _idx_archive(path) if archives.is_archive(path) else _idx_folder(path)
        source.title = dataset_title(name, str(path))
        return source
    raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def dataset_title(name: str, data_dir: str) -> str:
    """Which dataset `name` at `data_dir` is: for idx and folder, the name of its folder or
    archive (without the archive's suffix), else `name` itself."""
    if name not in FOLDERS:
        return name
    if name == "table":  # <catalog>.<schema>.<table>: the table's own name
        return data_dir.rsplit(".", 1)[-1]
    path = Path(data_dir).expanduser().resolve()
    stem = path.name
    for suffix in sorted((*archives.SUFFIXES, ".parquet"), key=len, reverse=True):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _digits() -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 8x8 images with values 0..16 -> the 0..255 range every other source uses.
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    part = Part(images, bunch.target.astype(np.uint8), "sklearn.datasets.load_digits")
    return Source("digits", "sklearn.datasets.load_digits", [part], DIGIT_CLASSES, "digits")


def _pictures(folder: Path, rule: InputRule) -> Source:
    classes, splits = folders.open_folder(folder, rule)
    parts = [
        Part(pictures, labels, split or folder.name, split == "test", split == "val")
        for split, pictures, labels in splits
    ]
    title = dataset_title("folder", str(folder))
    return Source("folder", folder.resolve().as_uri(), parts, classes, title)


def _table(path: Path, rule: InputRule, image: str, label: str, delta: bool) -> Source:
    classes, images, labels = tables.open_table(path, image, label, rule, delta)
    part = Part(images, labels, path.name)
    name = "delta" if delta else "parquet"
    return Source(name, path.resolve().as_uri(), [part], classes, dataset_title(name, str(path)))


def _spark_table(name: str, rule: InputRule, image: str, label: str) -> Source:
    """A table read through Spark (neuroflow.data.spark), staged as Parquet files that live as
    long as the Source."""
    from neuroflow.data.spark import stage_table

    files, staged = stage_table(name, image, label)
    try:
        classes, images, labels = tables.open_files(files, image, label, rule, f"table {name}")
    except BaseException:
        staged.cleanup()
        raise
    part = Part(images, labels, name)
    source = Source("table", f"table:{name}", [part], classes, dataset_title("table", name))
    source.unpacked = staged
    return source


def _idx_folder(folder: Path, where: str = "") -> Source:
    """The IDX pairs in `folder`; errors call it `where` (default: data_dir <folder>)."""
    where = where or f"data_dir {folder}"
    if not folder.is_dir():
        raise DataError(f"{where} does not exist or is not a folder")
    pairs = idx.find_pairs(folder)
    if not pairs:
        raise DataError(
            f"{where} holds no IDX pairs; expected files like "
            "train-images-idx3-ubyte[.gz] beside train-labels-idx1-ubyte[.gz]"
        )
    parts = [Part(*idx.read_pair(pair), pair.images.name, pair.is_official_test) for pair in pairs]
    shapes = {p.images.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise DataError(f"{where} mixes image shapes {sorted(shapes)}; expected one")
    if all(p.official_test for p in parts):  # a test split alone is split by fraction
        for part in parts:
            part.official_test = False
    n_classes = 1 + max(int(p.labels.max()) for p in parts if len(p.labels))
    return Source("idx", folder.as_uri(), parts, [str(c) for c in range(n_classes)])


def _idx_archive(archive: Path) -> Source:
    """The IDX files in `archive`, at its top or in one folder inside it, unpacked safely into a
    temporary folder that lives as long as the Source (raw files are memory-mapped from it)."""
    unpacked = tempfile.TemporaryDirectory(prefix="neuroflow-idx-")
    try:
        root = Path(unpacked.name).resolve()
        archives.extract(archive, root)
        homes = sorted({p.parent for p in root.rglob("*images*idx3*") if p.is_file()})
        if len(homes) > 1:
            folders = ", ".join(str(h.relative_to(root)) for h in homes)
            raise DataError(f"archive {archive} holds IDX files in {folders}; expected one folder")
        source = _idx_folder(homes[0] if homes else root, where=f"archive {archive}")
    except BaseException:
        unpacked.cleanup()
        raise
    source.uri, source.unpacked = archive.as_uri(), unpacked
    return source


def _torchvision(name: str, root: Path) -> Source:
    """The official train and test IDX files, downloaded into root/<Class>/raw when absent."""
    import torchvision.datasets
    from torchvision.datasets.utils import download_url

    class_name, classes = TORCHVISION[name]
    dataset_cls = getattr(torchvision.datasets, class_name)
    raw = root / class_name / "raw"
    for filename, md5 in dataset_cls.resources:
        if (raw / filename).exists() or (raw / filename.removesuffix(".gz")).exists():
            continue
        errors = []
        for mirror in dataset_cls.mirrors:
            try:
                download_url(mirror + filename, str(raw), filename, md5)
                break
            except Exception as error:  # network errors come in many types
                errors.append(f"{mirror}: {type(error).__name__}")
        else:
            raise DataError(
                f"cannot download {name} file {filename} into {raw} ({'; '.join(errors)}); "
                f"offline, place the IDX files there or use dataset=idx with data_dir"
            )
    source = _idx_folder(raw)
    return Source(name, f"torchvision.datasets.{class_name}", source.parts, classes, name)
