"""Stratified, seeded train/val/test splits over a pool of labels."""

from __future__ import annotations

import numpy as np

from neuroflow.errors import DataError


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Split indices 0..N-1 by class: each named split takes `fraction` of every class, the
    split "train" takes the rest. Deterministic for a seed; indices come back sorted."""
    if len(labels) == 0:
        raise DataError("the dataset holds no images; expected at least one per split")
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[np.ndarray]] = {name: [] for name in ("train", *fractions)}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for name, fraction in fractions.items():
            count = int(round(len(members) * fraction))
            chosen[name].append(members[start : start + count])
            start += count
        chosen["train"].append(members[start:])
    splits = {name: np.sort(np.concatenate(parts)) for name, parts in chosen.items()}
    for name, indices in splits.items():
        if len(indices) == 0:
            raise DataError(
                f"the {name} split is empty ({len(labels)} images, fractions {fractions}); "
                "expected fractions that leave every split at least one image"
            )
    return splits
