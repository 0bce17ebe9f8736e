"""IDX files, the format MNIST ships in: a magic number, big-endian dimensions, then raw data.

Raw files are memory-mapped and gzip files are streamed into one preallocated array, so no file
is ever held in memory twice. Every size is checked against the header before data is used.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuroflow.errors import DataError

# IDX type codes (third magic byte) -> big-endian numpy dtypes.
DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CHUNK = 1 << 22  # bytes per read when streaming a gzip file


@dataclass(frozen=True)
class IdxHeader:
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # bytes before the data

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class IdxPair:
    images: Path
    labels: Path

    @property
    def is_official_test(self) -> bool:
        """MNIST-family test files are named t10k-* (or test-*)."""
        return self.images.name.lower().startswith(("t10k", "test"))


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _parse_header(path: Path, stream) -> IdxHeader:
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in DTYPES or magic[3] == 0:
        raise DataError(f"{path}: not an IDX file (magic bytes {magic.hex() or 'missing'})")
    ndim = magic[3]
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header (expected {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw_dims)
    return IdxHeader(DTYPES[magic[2]], shape, 4 + 4 * ndim)


def read_header(path: Path) -> IdxHeader:
    try:
        with _open(path) as stream:
            return _parse_header(path, stream)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read an IDX header ({error})") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The array in `path`, which must have `ndim` dimensions and uint8 data."""
    header = read_header(path)
    if len(header.shape) != ndim or header.dtype != np.uint8:
        raise DataError(
            f"{path}: holds {header.dtype} data of shape {header.shape}, "
            f"expected uint8 data with {ndim} dimension{'s' if ndim > 1 else ''}"
        )
    if path.suffix != ".gz":
        found = os.path.getsize(path) - header.offset
        if found != header.nbytes:
            raise DataError(_size_message(path, header, found))
        return np.memmap(path, np.uint8, "r", header.offset, header.shape)
    return _stream_gzip(path, header)


def _stream_gzip(path: Path, header: IdxHeader) -> np.ndarray:
    array = np.empty(header.shape, np.uint8)
    buffer = memoryview(array).cast("B")
    filled = 0
    try:
        with gzip.open(path, "rb") as stream:
            stream.seek(header.offset)
            while filled < header.nbytes:
                count = stream.readinto(buffer[filled : filled + _CHUNK])
                if not count:
                    break
                filled += count
            extra = len(stream.read(1))
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: corrupt gzip data ({error})") from None
    if filled != header.nbytes or extra:
        raise DataError(_size_message(path, header, filled + extra, at_least=bool(extra)))
    return array


def _size_message(path: Path, header: IdxHeader, found: int, at_least: bool = False) -> str:
    shape = "x".join(map(str, header.shape))
    more = "at least " if at_least else ""
    return (
        f"{path}: header declares {shape} ({header.nbytes} bytes of data) "
        f"but the file holds {more}{found} bytes; it is truncated or corrupt"
    )


def find_pairs(folder: Path) -> list[IdxPair]:
    """Every images/labels pair in `folder`, e.g. train-images-idx3-ubyte(.gz) with
    train-labels-idx1-ubyte(.gz). A raw file wins over its .gz twin."""
    names = {p.name for p in folder.iterdir() if p.is_file()}
    pairs = []
    for name in sorted(names):
        if "images" not in name or "idx3" not in name:
            continue
        if name.endswith(".gz") and name[:-3] in names:  # its raw twin is read instead
            continue
        stem = name.removesuffix(".gz")
        label_stem = stem.replace("images", "labels", 1).replace("idx3", "idx1", 1)
        label_name = next((n for n in (label_stem, label_stem + ".gz") if n in names), None)
        if label_name is None:
            raise DataError(f"{folder / name}: no labels file beside it (expected {label_stem})")
        pairs.append(IdxPair(folder / name, folder / label_name))
    return pairs


def read_pair(pair: IdxPair) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W) uint8, labels (N,) uint8), with matching counts."""
    images = read_idx(pair.images, ndim=3)
    labels = read_idx(pair.labels, ndim=1)
    if len(images) != len(labels):
        raise DataError(
            f"{pair.images.name} holds {len(images)} images but {pair.labels.name} holds "
            f"{len(labels)} labels; expected the same count"
        )
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip when the name ends in .gz). Used for tests and exports."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as stream:
        stream.write(header + array.tobytes())
