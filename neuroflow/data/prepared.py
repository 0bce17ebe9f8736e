"""The prepared format: the folder preprocess logs and every later step reads by its URI.

    prepared/
        metadata.json            classes, image shape, channels, normalisation, digests, source
        train-images.npy         (N, H, W) uint8 grey, or (N, H, W, 3) colour (channels last)
        train-labels.npy         (N,) uint8
        train-hashes.npy         (N,) uint64, a hash of each source image's pixels
        val-images.npy ...       test-images.npy ...

A split's sha256 covers its images and labels; its digest is the first 16 hex digits of that.
The per-image hashes (format 2) tell which images two prepared datasets share, whatever their
seeds and splits: promote scores versions only on test images neither trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from neuroflow.data.framing import InputRule
from neuroflow.data.sources import Part, Source
from neuroflow.data.splits import stratified_split
from neuroflow.errors import DataError

SPLITS = ("train", "val", "test")
FORMAT = 2
READABLE = (1, 2)  # format 1 has no per-image hashes
METADATA = "metadata.json"
_CHUNK = 4096  # images gathered, resized and written at a time


@dataclass
class Prepared:
    images: dict[str, np.ndarray]  # split -> (N, H, W) or (N, H, W, C) uint8
    labels: dict[str, np.ndarray]  # split -> (N,) uint8
    meta: dict
    hashes: dict[str, np.ndarray] | None = None  # split -> (N,) uint64; None in format 1

    @property
    def digest(self) -> str:
        return self.meta["digest"]

    @property
    def title(self) -> str:
        """Which dataset this is (neuroflow.data.sources.Source.title)."""
        return self.meta.get("title", self.meta["dataset"])

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.meta["image_shape"])

    @property
    def channels(self) -> int:
        """1 (grey, images (N, H, W)) or 3 (colour, images (N, H, W, 3))."""
        return self.meta.get("channels", 1)  # absent from data prepared before colour

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """One image's shape: (H, W), or (H, W, C) in colour."""
        channels = self.channels
        return self.image_shape if channels == 1 else (*self.image_shape, channels)

    @property
    def input_rule(self) -> dict:
        """How each image was brought to the model's size (neuroflow.data.framing.InputRule)."""
        return self.meta.get("input_rule") or InputRule.legacy(self.image_shape[0]).to_dict()

    @property
    def mean(self) -> float:
        return self.meta["normalization"]["mean"]

    @property
    def std(self) -> float:
        return self.meta["normalization"]["std"]


def prepare(source: Source, out_dir: Path, config, fingerprint: str = "") -> dict:
    """Split `source` as `config` (a neuroflow.settings.PrepareConfig) says, bring it to
    image_size (the digits framed as MNIST's, unless mnist_framing is off; see
    neuroflow.data.framing), write the prepared folder; return its metadata, which records the
    source's `fingerprint` (neuroflow.data.fingerprint)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    given = {  # splits the source gives as they are: an official test split, a validation one
        "test": [p for p in source.parts if p.official_test],
        "val": [p for p in source.parts if p.validation],
    }
    pool = [p for p in source.parts if not (p.official_test or p.validation)]
    fractions = {"val": config.val_fraction, "test": config.test_fraction}
    fractions = {split: f for split, f in fractions.items() if not given[split]}
    labels = np.concatenate([p.labels for p in pool])
    indices = stratified_split(labels, fractions, config.seed)
    sources = {split: pool for split in SPLITS}
    for split, parts in given.items():
        if parts:
            sources[split] = parts
            indices[split] = np.arange(sum(len(p.labels) for p in parts))

    size, num_classes, splits = config.image_size, len(source.classes), {}
    rule = InputRule.for_source(
        source.name, size, config.mnist_framing, source.channels, config.fit
    )
    for split in SPLITS:
        chosen = indices[split]
        splits[split] = _write_split(out_dir, split, sources[split], chosen, rule, num_classes)
    mean, std = _pixel_stats(np.load(out_dir / "train-images.npy", mmap_mode="r"))
    meta = {
        "format": FORMAT,
        "dataset": source.name,
        "title": source.title or source.name,
        "source": source.uri,
        "source_fingerprint": fingerprint,
        "classes": source.classes,
        "image_shape": [size, size],
        "channels": source.channels,
        "native_shape": list(source.native_shape),
        "official_test": bool(given["test"]),
        "given_val": bool(given["val"]),
        "input_rule": rule.to_dict(),
        "normalization": {"mean": mean, "std": std},
        "splits": splits,
        "digest": _combined_digest(splits),
        "params": asdict(config),
    }
    (out_dir / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_prepared(folder: Path, mmap: bool = False) -> Prepared:
    """Read a prepared folder, checking every split against its recorded sha256. With mmap,
    the arrays stay on disk until used."""
    try:
        meta = json.loads((folder / METADATA).read_text())
    except (OSError, ValueError) as error:
        raise DataError(
            f"{folder}: not a prepared dataset (cannot read {METADATA}: {error})"
        ) from None
    if meta.get("format") not in READABLE:
        raise DataError(f"{folder}: prepared format {meta.get('format')!r}, expected {FORMAT}")
    images, labels, hashes = {}, {}, {}
    mode = "r" if mmap else None
    for split in SPLITS:
        recorded = meta["splits"][split]
        files = [folder / f"{split}-images.npy", folder / f"{split}-labels.npy"]
        _check(files, recorded["sha256"], f"{folder}: {split} split")
        images[split], labels[split] = (np.load(f, mmap_mode=mode) for f in files)
        if "hashes_sha256" in recorded:
            path = folder / f"{split}-hashes.npy"
            _check([path], recorded["hashes_sha256"], f"{folder}: {split} image hashes")
            hashes[split] = np.load(path)
    return Prepared(images, labels, meta, hashes if len(hashes) == len(SPLITS) else None)


def _check(files: list[Path], sha256: str, what: str) -> None:
    try:
        found = _sha256(files)
    except OSError as error:
        raise DataError(f"{what}: missing split file ({error})") from None
    if found != sha256:
        raise DataError(f"{what} does not match its recorded sha256")


def _write_split(
    out_dir: Path, split: str, parts: list[Part], indices, rule: InputRule, num_classes: int
) -> dict:
    """Write one split, each chunk of images brought to the rule's size by the rule."""
    images_path, labels_path = out_dir / f"{split}-images.npy", out_dir / f"{split}-labels.npy"
    shape = (len(indices), *rule.shape)
    images = np.lib.format.open_memmap(images_path, "w+", np.uint8, shape)
    labels = np.empty(len(indices), np.uint8)
    hashes = np.empty(len(indices), np.uint64)
    start = 0
    for chunk_images, chunk_labels in _gather(parts, indices):
        stop = start + len(chunk_labels)
        images[start:stop] = rule.apply(chunk_images)
        labels[start:stop] = chunk_labels
        hashes[start:stop] = image_hashes(chunk_images)
        start = stop
    images.flush()
    del images
    np.save(labels_path, labels)
    np.save(out_dir / f"{split}-hashes.npy", hashes)
    sha256 = _sha256([images_path, labels_path])
    counts = np.bincount(labels, minlength=num_classes).tolist()
    return {
        "count": len(indices),
        "sha256": sha256,
        "digest": sha256[:16],
        "hashes_sha256": _sha256([out_dir / f"{split}-hashes.npy"]),
        "class_counts": counts,
    }


def image_hashes(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) uint8 source images -> (N,) uint64: 8 bytes of BLAKE2b over each image's
    shape and pixels. The same image has the same hash in any prepared dataset of the same
    source."""
    out = np.empty(len(images), np.uint64)
    for index, image in enumerate(images):
        digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=8)
        digest.update(str(image.shape).encode())
        out[index] = int.from_bytes(digest.digest(), "little")
    return out


def _gather(parts: list[Part], indices: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Images and labels at `indices` of the parts laid end to end, a chunk at a time."""
    offsets = np.cumsum([0] + [len(p.labels) for p in parts])
    shape = parts[0].images.shape[1:]
    for start in range(0, len(indices), _CHUNK):
        chunk = indices[start : start + _CHUNK]
        owner = np.searchsorted(offsets, chunk, side="right") - 1
        images = np.empty((len(chunk), *shape), np.uint8)
        labels = np.empty(len(chunk), np.uint8)
        for part_id in np.unique(owner):
            mask = owner == part_id
            local = chunk[mask] - offsets[part_id]
            images[mask] = parts[part_id].images[local]
            labels[mask] = parts[part_id].labels[local]
        yield images, labels


def _pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of pixel values scaled to [0, 1], accumulated a chunk at a time."""
    total = total_sq = 0.0
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK].astype(np.float64) / 255
        total += chunk.sum()
        total_sq += np.square(chunk).sum()
    count = images.size
    mean = total / count
    std = max(total_sq / count - mean * mean, 1e-12) ** 0.5
    return round(float(mean), 6), round(float(std), 6)


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _combined_digest(splits: dict) -> str:
    return hashlib.sha256("".join(splits[s]["sha256"] for s in SPLITS).encode()).hexdigest()[:16]
