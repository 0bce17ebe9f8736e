"""IDX reading and writing: round trips, pairing, and every way a file can be broken."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from neuroflow.data.idx import IdxPair, find_pairs, read_idx, read_pair, write_idx
from neuroflow.errors import DataError

IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)  # (N, H, W)
LABELS = np.array([7, 1], dtype=np.uint8)


def _fails(path: Path, ndim: int, expected: str) -> str:
    """read_idx(path) must raise a one-line DataError naming the file and `expected`."""
    with pytest.raises(DataError, match=re.escape(str(path))) as caught:
        read_idx(path, ndim)
    message = str(caught.value)
    assert re.search(expected, message), message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["x-images-idx3-ubyte", "x-images-idx3-ubyte.gz"])
def test_round_trip(tmp_path: Path, name: str):
    path = tmp_path / name
    write_idx(path, IMAGES)
    array = read_idx(path, ndim=3)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, IMAGES)


def test_raw_file_is_memory_mapped(tmp_path: Path):
    write_idx(tmp_path / "raw", IMAGES)
    write_idx(tmp_path / "packed.gz", IMAGES)
    assert isinstance(read_idx(tmp_path / "raw", 3), np.memmap)
    assert not isinstance(read_idx(tmp_path / "packed.gz", 3), np.memmap)


def test_find_pairs_matches_images_with_labels(tmp_path: Path):
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", IMAGES)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", LABELS)
    (tmp_path / "README.md").write_text("not data")
    pairs = find_pairs(tmp_path)
    assert [(p.images.name, p.labels.name) for p in pairs] == [
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz"),
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte.gz"),
    ]
    assert [p.is_official_test for p in pairs] == [True, False]


def test_find_pairs_prefers_raw_over_gzip_twin(tmp_path: Path):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        write_idx(tmp_path / name, IMAGES if "images" in name else LABELS)
        write_idx(tmp_path / f"{name}.gz", IMAGES if "images" in name else LABELS)
    assert find_pairs(tmp_path) == [
        IdxPair(tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte")
    ]


def test_find_pairs_without_labels_names_the_file(tmp_path: Path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", IMAGES)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*train-labels-idx1-ubyte"):
        find_pairs(tmp_path)


def test_is_official_test():
    assert IdxPair(Path("t10k-images-idx3-ubyte"), Path("l")).is_official_test
    assert not IdxPair(Path("train-images-idx3-ubyte"), Path("l")).is_official_test


def test_read_pair(tmp_path: Path):
    pair = IdxPair(tmp_path / "images", tmp_path / "labels")
    write_idx(pair.images, IMAGES)
    write_idx(pair.labels, LABELS)
    images, labels = read_pair(pair)
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)


def test_bad_magic_bytes(tmp_path: Path):
    path = tmp_path / "images"
    path.write_bytes(b"PK\x03\x04" + bytes(32))
    _fails(path, 3, "not an IDX file")


def test_empty_file(tmp_path: Path):
    path = tmp_path / "images"
    path.write_bytes(b"")
    _fails(path, 3, "not an IDX file.*missing")


def test_truncated_header(tmp_path: Path):
    path = tmp_path / "images"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 2))  # 1 of 3 dimensions
    _fails(path, 3, "truncated IDX header.*3 dimensions")


def test_truncated_raw_file(tmp_path: Path):
    path = tmp_path / "images"
    write_idx(path, IMAGES)
    path.write_bytes(path.read_bytes()[:-5])
    _fails(path, 3, r"2x3x4 \(24 bytes of data\) but the file holds 19 bytes")


def test_trailing_bytes_in_raw_file(tmp_path: Path):
    path = tmp_path / "images"
    write_idx(path, IMAGES)
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    _fails(path, 3, r"24 bytes of data\) but the file holds 26 bytes")


def test_gzip_of_truncated_data(tmp_path: Path):
    path = tmp_path / "images.gz"
    write_idx(path, IMAGES)
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    _fails(path, 3, r"24 bytes of data\) but the file holds 19 bytes; it is truncated")


def test_gzip_stream_cut_short(tmp_path: Path):
    path = tmp_path / "images.gz"
    write_idx(path, IMAGES)
    path.write_bytes(path.read_bytes()[:-12])  # loses the end-of-stream marker
    _fails(path, 3, "corrupt gzip data")


def test_gzip_with_garbage_after_header(tmp_path: Path):
    path = tmp_path / "images.gz"
    write_idx(path, IMAGES)
    path.write_bytes(path.read_bytes()[:10] + b"\xff" * 40)  # valid gzip header, then junk
    _fails(path, 3, "cannot read an IDX header|corrupt gzip data")


def test_gzip_with_bad_checksum(tmp_path: Path):
    path = tmp_path / "images.gz"
    write_idx(path, IMAGES)
    path.write_bytes(path.read_bytes()[:-8] + bytes(8))
    _fails(path, 3, "corrupt gzip data.*CRC")


def test_trailing_bytes_in_gzip_file(tmp_path: Path):
    path = tmp_path / "images.gz"
    write_idx(path, IMAGES)
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"\x00"))
    _fails(path, 3, r"24 bytes of data\) but the file holds at least 25 bytes")


def test_labels_where_images_expected(tmp_path: Path):
    path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(path, LABELS)
    _fails(path, 3, r"shape \(2,\), expected uint8 data with 3 dimensions")


def test_non_uint8_data(tmp_path: Path):
    path = tmp_path / "labels"
    header = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2)  # 0x0C: big-endian int32
    path.write_bytes(header + np.array([1, 2], ">i4").tobytes())
    _fails(path, 1, "holds >i4 data.*expected uint8 data with 1 dimension$")


def test_read_pair_count_mismatch(tmp_path: Path):
    pair = IdxPair(tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte")
    write_idx(pair.images, IMAGES)
    write_idx(pair.labels, np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="holds 2 images but train-labels-idx1-ubyte holds 3"):
        read_pair(pair)
