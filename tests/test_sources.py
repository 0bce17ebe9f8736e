"""Sources: scikit-learn digits, IDX folders, and the torchvision MNIST family read offline."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from helpers import synthetic_digits
from neuroflow.data.idx import write_idx
from neuroflow.data.sources import DIGIT_CLASSES, load_source
from neuroflow.errors import DataError


def _write_pair(folder: Path, prefix: str, count: int, size: int = 8, gz: str = "") -> None:
    images, labels = synthetic_digits(count, size=size)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{gz}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{gz}", labels)


def test_digits():
    source = load_source("digits", "unused")
    (part,) = source.parts
    assert part.images.shape == (1797, 8, 8)
    assert part.images.dtype == np.uint8
    assert (part.images.min(), part.images.max()) == (0, 255)
    assert set(part.labels.tolist()) == set(range(10))
    assert source.classes == DIGIT_CLASSES
    assert not source.has_official_test
    assert source.native_shape == (8, 8)


def test_idx_folder_with_official_test(idx_folder: Path):
    source = load_source("idx", str(idx_folder))
    by_origin = {p.origin: p for p in source.parts}
    assert set(by_origin) == {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"}
    assert by_origin["t10k-images-idx3-ubyte.gz"].official_test
    assert not by_origin["train-images-idx3-ubyte"].official_test
    assert len(by_origin["train-images-idx3-ubyte"].labels) == 300
    assert source.has_official_test
    assert source.classes == DIGIT_CLASSES
    assert source.uri == idx_folder.resolve().as_uri()


def test_idx_folder_with_only_test_files_is_pooled(tmp_path: Path):
    _write_pair(tmp_path, "t10k", 40)
    source = load_source("idx", str(tmp_path))
    assert len(source.parts) == 1
    assert not source.has_official_test


def test_idx_folder_with_mixed_shapes(tmp_path: Path):
    _write_pair(tmp_path, "train", 20, size=8)
    _write_pair(tmp_path, "t10k", 20, size=28)
    with pytest.raises(DataError, match=r"mixes image shapes \[\(8, 8\), \(28, 28\)\]"):
        load_source("idx", str(tmp_path))


def test_missing_folder(tmp_path: Path):
    folder = tmp_path.resolve() / "absent"
    with pytest.raises(DataError, match=re.escape(f"data_dir {folder} does not exist")):
        load_source("idx", str(folder))


def test_folder_without_idx_pairs(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("no data here")
    with pytest.raises(DataError, match="holds no IDX pairs; expected files like"):
        load_source("idx", str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'; expected one of digits"):
        load_source("cifar", "unused")


def test_torchvision_reads_files_already_in_place(tmp_path: Path, monkeypatch):
    import torchvision.datasets.utils

    calls = []
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", lambda *a: calls.append(a))
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_pair(raw, "train", 50, gz=".gz")
    _write_pair(raw, "t10k", 20, gz=".gz")
    source = load_source("mnist", str(tmp_path))
    assert calls == []
    assert source.name == "mnist"
    assert source.uri == "torchvision.datasets.MNIST"
    assert source.classes == DIGIT_CLASSES
    assert sorted((len(p.labels), p.official_test) for p in source.parts) == [
        (20, True),
        (50, False),
    ]


def test_torchvision_download_failure(tmp_path: Path, monkeypatch):
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)
    raw = tmp_path.resolve() / "MNIST" / "raw"
    with pytest.raises(DataError, match="cannot download mnist file") as caught:
        load_source("mnist", str(tmp_path))
    message = str(caught.value)
    assert str(raw) in message
    assert "OSError" in message
    assert "\n" not in message
