"""The test images two versions can fairly be compared on: those neither trained or validated
on. Each prepared dataset keeps a hash of every source image (neuroflow.data.prepared), so two
preparations of one source with other seeds, whose splits overlap, are told apart image by
image."""

from __future__ import annotations

import numpy as np

from neuroflow.data.prepared import Prepared
from neuroflow.errors import DataError

SEEN = ("train", "val")


def unseen_test(
    candidate: Prepared, champion: Prepared | None, pool_champion: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W) uint8, labels (N,)): the test images of `candidate`, and with
    `pool_champion` those of `champion` too, that neither version trained or validated on,
    each image once, the candidate's first. Two preparations with the same splits are compared
    on the candidate's test split, less any image its train or val split holds too."""
    if champion is not None and _same_splits(candidate, champion):
        champion = None  # one dataset: only its own train and val images are seen
    both = [p for p in (candidate, champion) if p is not None]
    if champion is None and candidate.hashes is None:  # format 1: the split as it is
        return np.asarray(candidate.images["test"]), np.asarray(candidate.labels["test"])
    for prepared in both:
        if prepared.hashes is None:
            raise DataError(
                f"data {prepared.meta.get('source')} was prepared without per-image hashes "
                "(prepared format 1), so which images each version trained on cannot be told; "
                "expected both versions trained on data prepared by this preprocess"
            )
    pooled = both if pool_champion else both[:1]
    seen = np.concatenate([p.hashes[split] for p in both for split in SEEN])
    hashes = np.concatenate([p.hashes["test"] for p in pooled])
    _, first = np.unique(hashes, return_index=True)  # each image once
    keep = np.zeros(len(hashes), bool)
    keep[first] = True
    keep &= ~np.isin(hashes, seen)
    images = np.concatenate([np.asarray(p.images["test"]) for p in pooled])[keep]
    labels = np.concatenate([np.asarray(p.labels["test"]) for p in pooled])[keep]
    return images, labels


def _same_splits(one: Prepared, other: Prepared) -> bool:
    return all(
        one.meta["splits"][s]["sha256"] == other.meta["splits"][s]["sha256"]
        for s in ("train", "val", "test")
    )
