"""The prepared format: the folder preprocess logs and every later step reads by its URI.

    prepared/
        metadata.json                 classes, image shape, channels, normalisation, digests,
                                      source, and each file below with its size and sha256
        train-images-00000.npy ...    shards of (n, H, W) uint8 grey or (n, H, W, 3) colour
                                      (channels last) images, about shard_mb MiB each
        train-labels.npy              (N,) uint8
        train-hashes.npy              (N,) uint64, a hash of each source image's pixels
        val-...  test-...

A split's sha256 covers its images' pixels, in order, then its labels, whatever the shards;
its digest is the first 16 hex digits of that. Every file is checked against its sha256 when
read. The per-image hashes tell which images two prepared datasets share, whatever their seeds
and splits: promote scores versions only on test images neither trained on. Formats 1 (no
per-image hashes) and 2 (one images file per split) are still read, whole.

A consumer opens a prepared folder by its URI (open_prepared): small ones are read whole into
memory; large ones, or any with loading=stream, are read a shard at a time
(neuroflow.data.shards), in place from a local store or fetched from a remote one.
"""

from __future__ import annotations

import hashlib
import json
import mmap
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from neuroflow.data.framing import InputRule
from neuroflow.data.shards import Location, MiB, Shard, ShardCache, ShardedImages
from neuroflow.data.sources import Part, Source
from neuroflow.data.splits import stratified_split
from neuroflow.errors import DataError

SPLITS = ("train", "val", "test")
FORMAT = 3
READABLE = (1, 2, 3)  # 1 has no per-image hashes, 2 one images file per split
METADATA = "metadata.json"
_CHUNK = 4096  # images gathered, resized and written at a time
Publish = Callable[[Path], None]  # given each file of the folder once it is complete


@dataclass
class Prepared:
    # split -> (N, H, W) or (N, H, W, C) uint8, whole in memory or read a shard at a time
    images: dict[str, np.ndarray | ShardedImages]
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

    def shards(self, split: str) -> list[Shard]:
        """The files holding `split`'s images; one per split before format 3."""
        recorded = self.meta["splits"][split]
        if "shards" in recorded:
            return [Shard.from_dict(record) for record in recorded["shards"]]
        image_bytes = int(np.prod(self.pixel_shape))
        count = recorded["count"]
        return [Shard(f"{split}-images.npy", recorded["sha256"], count * image_bytes, count)]

    @property
    def image_bytes(self) -> int:
        """The bytes of every split's images together."""
        return sum(s.bytes for split in SPLITS for s in self.shards(split))

    @property
    def mean(self) -> float:
        return self.meta["normalization"]["mean"]

    @property
    def std(self) -> float:
        return self.meta["normalization"]["std"]


def prepare(
    source: Source,
    out_dir: Path,
    config,
    fingerprint: str = "",
    publish: Publish | None = None,
) -> dict:
    """Split `source` as `config` (a neuroflow.settings.PrepareConfig) says, bring it to
    image_size (the digits framed as MNIST's, unless mnist_framing is off; see
    neuroflow.data.framing), write the prepared folder a chunk of images at a time; return its
    metadata, which records the source's `fingerprint` (neuroflow.data.fingerprint). Each file
    is handed to `publish` once written (metadata.json last), which may move it away: the
    folder never needs to hold a whole split."""
    out_dir.mkdir(parents=True, exist_ok=True)
    publish = publish or (lambda path: None)
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
    per_shard = max(1, int(config.shard_mb * MiB) // int(np.prod(rule.shape)))
    stats = PixelStats()
    for split in SPLITS:
        writer = SplitWriter(out_dir, split, rule, per_shard, publish)
        seen = stats if split == "train" else None
        splits[split] = writer.write(sources[split], indices[split], num_classes, seen)
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
        "normalization": stats.result(),
        "splits": splits,
        "digest": _combined_digest(splits),
        "params": asdict(config),
    }
    (out_dir / METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    publish(out_dir / METADATA)
    return meta


def read_metadata(location: Location) -> dict:
    """A prepared folder's metadata.json, checked to be a format this version reads."""
    try:
        meta = json.loads(location.text(METADATA))
    except (OSError, ValueError, DataError) as error:
        raise DataError(
            f"{location.uri}: not a prepared dataset (cannot read {METADATA}: "
            f"{str(error).splitlines()[0]})"
        ) from None
    if meta.get("format") not in READABLE:
        raise DataError(
            f"{location.uri}: prepared format {meta.get('format')!r}, expected {FORMAT}"
        )
    return meta


def open_prepared(
    uri: str, stream: bool | None = None, cache: ShardCache | None = None
) -> Prepared:
    """The prepared dataset at `uri` (a folder, or an artifact URI such as runs:/<id>/prepared),
    its labels and image hashes read, its images read whole (stream=False), a shard at a time
    (stream=True), or whichever suits their size (None: see should_stream). A remote store's
    files are fetched into `cache`; a local store's are read in place."""
    location = Location(uri, cache)
    meta = read_metadata(location)
    if meta["format"] < 3:  # one file per split: read whole, from a copy when remote
        return _legacy(location, stream)
    prepared = Prepared({}, {}, meta, {})
    if stream is None:
        stream = should_stream(prepared)
    for split in SPLITS:
        recorded = meta["splits"][split]
        shards = prepared.shards(split)
        images = ShardedImages(location, shards, prepared.pixel_shape)
        prepared.images[split] = images if stream else _whole(images)
        prepared.labels[split] = location.array(Shard.from_dict(recorded["labels"]))
        prepared.hashes[split] = location.array(Shard.from_dict(recorded["hashes"]))
        if len(prepared.labels[split]) != recorded["count"]:
            raise DataError(f"{location.uri}: {split} labels do not match its recorded count")
    return prepared


def open_for(uri: str, config) -> Prepared:
    """The prepared dataset at `uri` as a loop's `config` (neuroflow.settings.LoopConfig) reads
    it: its loading, and its cache for a remote store's shards."""
    stream = {"memory": False, "stream": True}.get(config.loading)  # auto: None
    cache = ShardCache(Path(config.cache_dir).expanduser(), int(config.cache_mb * MiB))
    return open_prepared(uri, stream, cache)


def should_stream(prepared: Prepared) -> bool:
    """loading=auto: stream images larger than neuroflow.settings.STREAM_ABOVE_MB."""
    from neuroflow.settings import STREAM_ABOVE_MB

    return prepared.image_bytes > STREAM_ABOVE_MB * MiB


def load_prepared(folder: Path, mmap: bool = False) -> Prepared:
    """Read a local prepared folder, checking every file against its recorded sha256: whole
    into memory, or with mmap, images that stay on disk until used (a shard at a time)."""
    return open_prepared(str(folder), stream=mmap)


def _whole(images: ShardedImages) -> np.ndarray:
    """Every shard read (and checked) into one array."""
    whole = np.empty(images.shape, np.uint8)
    for number, start in enumerate(images.starts[:-1]):
        whole[start : images.starts[number + 1]] = images.shard(number)
    return whole


def _legacy(location: Location, mmap: bool | None) -> Prepared:
    """A prepared folder of format 1 or 2, from this machine or copied from a remote store."""
    if location.folder is None:
        import tempfile

        from neuroflow.data.shards import download_file

        with tempfile.TemporaryDirectory() as tmp:
            prepared = _legacy(Location(download_file(location.uri, tmp)), False)
        return prepared
    folder = location.folder
    meta = read_metadata(location)
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


class PixelStats:
    """Mean and std of pixel values scaled to [0, 1], accumulated a chunk at a time."""

    def __init__(self):
        self.total = self.total_sq = 0.0
        self.count = 0

    def add(self, images: np.ndarray) -> None:
        chunk = images.astype(np.float64) / 255
        self.total += chunk.sum()
        self.total_sq += np.square(chunk).sum()
        self.count += chunk.size

    def result(self) -> dict:
        mean = self.total / max(self.count, 1)
        std = max(self.total_sq / max(self.count, 1) - mean * mean, 1e-12) ** 0.5
        return {"mean": round(float(mean), 6), "std": round(float(std), 6)}


@dataclass
class SplitWriter:
    """Writes one split: its images in shards of `per_shard`, each brought to the rule's size
    by the rule a chunk at a time, then its labels and image hashes."""

    out_dir: Path
    split: str
    rule: InputRule
    per_shard: int
    publish: Publish

    def write(self, parts: list[Part], indices, num_classes: int, stats: PixelStats | None) -> dict:
        labels = np.empty(len(indices), np.uint8)
        hashes = np.empty(len(indices), np.uint64)
        content = hashlib.sha256()  # the pixels in order, then the labels
        shards = []
        for number, first in enumerate(range(0, max(len(indices), 1), self.per_shard)):
            chosen = indices[first : first + self.per_shard]
            path = self.out_dir / f"{self.split}-images-{number:05d}.npy"
            images = np.lib.format.open_memmap(
                path, "w+", np.uint8, (len(chosen), *self.rule.shape)
            )
            start = first
            for chunk_images, chunk_labels in _gather(parts, chosen):
                stop = start + len(chunk_labels)
                written = self.rule.apply(chunk_images)
                images[start - first : stop - first] = written
                content.update(np.ascontiguousarray(written).tobytes())
                if stats is not None:
                    stats.add(written)
                labels[start:stop] = chunk_labels
                hashes[start:stop] = image_hashes(chunk_images)
                start = stop
            images.flush()
            del images
            shards.append({**self._finished(path), "count": len(chosen)})
        content.update(labels.tobytes())
        sha256 = content.hexdigest()
        written = {}
        for kind, array in (("labels", labels), ("hashes", hashes)):
            np.save(self.out_dir / f"{self.split}-{kind}.npy", array)
            written[kind] = self._finished(self.out_dir / f"{self.split}-{kind}.npy")
        return {
            "count": len(indices),
            "sha256": sha256,
            "digest": sha256[:16],
            "class_counts": np.bincount(labels, minlength=num_classes).tolist(),
            "shards": shards,
            **written,
        }

    def _finished(self, path: Path) -> dict:
        record = {"file": path.name, "sha256": _sha256([path]), "bytes": path.stat().st_size}
        self.publish(path)
        return record


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
    """Images and labels at `indices` of the parts laid end to end, a chunk at a time. A
    memory-mapped part (an IDX file) is read _MAPPED images at a time, its pages let go after
    each group, so the memory used stays flat in the source's size."""
    offsets = np.cumsum([0] + [len(p.labels) for p in parts])
    shape = parts[0].images.shape[1:]
    for start in range(0, len(indices), _CHUNK):
        chunk = indices[start : start + _CHUNK]
        owner = np.searchsorted(offsets, chunk, side="right") - 1
        images = np.empty((len(chunk), *shape), np.uint8)
        labels = np.empty(len(chunk), np.uint8)
        for part_id in np.unique(owner):
            part = parts[part_id]
            rows = np.flatnonzero(owner == part_id)
            for first in range(0, len(rows), _MAPPED):
                group = rows[first : first + _MAPPED]
                local = chunk[group] - offsets[part_id]
                images[group] = part.images[local]
                labels[group] = part.labels[local]
                _release(part.images)
        yield images, labels


# Images read from a memory-mapped part between releases. Each maps its neighbours too (the
# kernel maps up to 64 KiB about a page it faults in), so a group of scattered ones maps up to
# _MAPPED * 64 KiB: 16 MiB.
_MAPPED = 256


def _release(images) -> None:
    """Unmap the pages of a memory-mapped array read so far: they stay in the page cache, but
    no longer count in this process's memory. It costs little (a few microseconds) when few
    are mapped."""
    handle = getattr(images, "_mmap", None)
    if handle is not None and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _combined_digest(splits: dict) -> str:
    return hashlib.sha256("".join(splits[s]["sha256"] for s in SPLITS).encode()).hexdigest()[:16]
