"""Stratified splits: proportions per class, disjoint and complete, deterministic per seed."""

from __future__ import annotations

import numpy as np
import pytest

from neuroflow.data.splits import stratified_split
from neuroflow.errors import DataError

FRACTIONS = {"val": 0.1, "test": 0.2}


def _labels(seed: int = 0) -> np.ndarray:
    """Five classes of uneven size, shuffled: (183,) ints."""
    labels = np.repeat(np.arange(5), [50, 37, 23, 61, 12])
    return np.random.default_rng(seed).permutation(labels)


def test_keeps_class_proportions():
    labels = _labels()
    splits = stratified_split(labels, FRACTIONS, seed=0)
    for cls in range(5):
        size = int((labels == cls).sum())
        for name, fraction in FRACTIONS.items():
            count = int((labels[splits[name]] == cls).sum())
            assert abs(count - fraction * size) <= 1, (name, cls, count, size)


def test_splits_are_disjoint_sorted_and_complete():
    labels = _labels()
    splits = stratified_split(labels, FRACTIONS, seed=0)
    assert set(splits) == {"train", "val", "test"}
    for indices in splits.values():
        assert np.all(np.diff(indices) > 0)  # sorted, no repeats
    together = np.concatenate(list(splits.values()))
    np.testing.assert_array_equal(np.sort(together), np.arange(len(labels)))


def test_same_seed_same_split():
    first = stratified_split(_labels(), FRACTIONS, seed=3)
    second = stratified_split(_labels(), FRACTIONS, seed=3)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_different_seed_different_split():
    first = stratified_split(_labels(), FRACTIONS, seed=0)
    second = stratified_split(_labels(), FRACTIONS, seed=1)
    assert not np.array_equal(first["val"], second["val"])


def test_empty_split_is_an_error():
    labels = np.array([0, 0, 1, 1])  # 10% of two images rounds to none
    with pytest.raises(DataError, match=r"the val split is empty \(4 images") as caught:
        stratified_split(labels, FRACTIONS, seed=0)
    assert "\n" not in str(caught.value)


def test_no_labels_is_an_error():
    with pytest.raises(DataError, match="no images"):
        stratified_split(np.array([], np.uint8), FRACTIONS, seed=0)
