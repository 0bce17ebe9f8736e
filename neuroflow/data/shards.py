"""A prepared split's images kept as shards, and read a shard at a time.

preprocess cuts each split's images into shards of about `shard_mb` MiB
(`<split>-images-00000.npy`, ...; see neuroflow.data.prepared), each recorded in metadata.json
with its size and sha256. A consumer reads them through `ShardedImages`: in place from a store
on this machine, or fetched one at a time from a remote one (a tracking server serving
artifacts, S3, ADLS, GCS, a Unity Catalog volume: whatever `mlflow.artifacts` downloads) into a
bounded cache on disk (`ShardCache`). Every shard is checked against its sha256 whenever it is
read, so nothing from a store is used unchecked.

Each epoch's order (`epoch_order`) takes the shards in a random order, a window of them at a
time, and shuffles the images of each window together: a loop holds one window's shards in
memory, whatever the split's size. A split no larger than a window is shuffled whole, by one
permutation. The in-memory path draws the same order, so both give the same batches.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from neuroflow.errors import DataError

MiB = 1 << 20
CACHE_DIR, CACHE_MB = "~/.cache/neuroflow/shards", 2048  # the loops' cache_dir and cache_mb


@dataclass(frozen=True)
class Shard:
    """One file of a prepared folder, as metadata.json records it."""

    file: str
    sha256: str
    bytes: int
    count: int = 0  # images in it; 0 for a split's labels or hashes

    @classmethod
    def from_dict(cls, record: dict) -> Shard:
        return cls(record["file"], record["sha256"], record["bytes"], record.get("count", 0))


def epoch_order(generator, counts: Sequence[int], window: int):
    """One epoch's order over a split of shards holding `counts` images: the shards in a
    random order, `window` at a time, the images of each window shuffled together. A split of
    at most `window` shards is one permutation of all its images (torch.randperm)."""
    import torch

    total = int(sum(counts))
    if len(counts) <= window:
        return torch.randperm(total, generator=generator)
    starts = np.cumsum([0, *counts])
    shards = torch.randperm(len(counts), generator=generator).tolist()
    pieces = []
    for first in range(0, len(shards), window):
        group = shards[first : first + window]
        indices = torch.cat([torch.arange(starts[s], starts[s + 1]) for s in group])
        pieces.append(indices[torch.randperm(len(indices), generator=generator)])
    return torch.cat(pieces)


def window_of(shards: Sequence[Shard], shuffle_mb: float) -> int:
    """How many of a split's shards a shuffle window of `shuffle_mb` MiB holds: at least one."""
    largest = max((s.bytes for s in shards), default=1)
    return max(1, int(shuffle_mb * MiB) // largest)


def local_folder(uri: str) -> Path | None:
    """The folder an artifact URI names when it is on this machine (a path, a file: URI, or a
    run's artifacts in a local store), else None: it must be fetched."""
    if uri.startswith("runs:/"):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking.artifact_utils import get_artifact_uri

        run_id, _, path = uri[len("runs:/") :].partition("/")
        try:
            uri = get_artifact_uri(run_id, path)
        except MlflowException as error:
            raise DataError(f"cannot open {uri}: {str(error).splitlines()[0]}") from None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        from mlflow.utils.file_utils import local_file_uri_to_path

        return Path(local_file_uri_to_path(uri))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def sha256_of(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_array(data: bytes, what: str) -> np.ndarray:
    """The array a .npy file's `data` holds, read in place (no copy)."""
    stream = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(stream)
        array = np.frombuffer(data, dtype, offset=stream.tell())
    except ValueError as error:
        raise DataError(f"{what}: not a .npy array ({error})") from None
    return array.reshape(shape, order="F" if fortran else "C")


class ShardCache:
    """Files fetched from a remote store, kept in `folder` under their sha256, `limit` bytes in
    all: the least recently used are removed to make room. Processes may share the folder."""

    def __init__(self, folder: Path, limit: int):
        self.folder, self.limit = folder, limit

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npy") if p.is_file())

    def fetch(self, uri: str, shard: Shard) -> bytes:
        """The bytes of the file at `uri`, checked against `shard`'s sha256: from the cache when
        it holds them, else downloaded into it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{shard.sha256}.npy"
        try:
            data = path.read_bytes()
        except OSError:
            data = None
        if data is not None and sha256_of(data) == shard.sha256:
            os.utime(path)  # most recently used
            return data
        if shard.bytes > self.limit:
            raise DataError(
                f"{shard.file} is {shard.bytes / MiB:.1f} MiB, more than the shard cache's "
                f"{self.limit / MiB:.0f} MiB: expected cache_mb of at least "
                f"{-(-shard.bytes // MiB)}"
            )
        self._make_room(shard.bytes)
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=".fetch-") as tmp:
            local = Path(download_file(uri, tmp))
            data = local.read_bytes()
            check(data, shard, uri)
            os.replace(local, path)
        return data

    def _make_room(self, needed: int) -> None:
        files = []
        for path in self.folder.glob("*.npy"):
            try:
                stat = path.stat()
            except OSError:  # removed by another process meanwhile
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        used = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):  # the least recently used first
            if used + needed <= self.limit:
                break
            path.unlink(missing_ok=True)
            used -= size


def download_file(uri: str, dst: str) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)
    except (MlflowException, OSError) as error:
        raise DataError(f"cannot download {uri}: {str(error).splitlines()[0]}") from None


def check(data: bytes, shard: Shard, where: str) -> None:
    if sha256_of(data) != shard.sha256:
        raise DataError(f"{where} does not match its recorded sha256: the prepared data changed")


class Location:
    """Where a prepared folder's files are read from: in place on this machine, or fetched
    from its artifact URI through `cache`."""

    def __init__(self, uri: str, cache: ShardCache | None = None):
        self.uri = uri.rstrip("/")
        self.folder = local_folder(self.uri)
        self.cache = cache or ShardCache(Path(CACHE_DIR).expanduser(), CACHE_MB * MiB)

    def read(self, shard: Shard) -> bytes:
        """`shard`'s bytes, checked against its sha256."""
        if self.folder is None:
            return self.cache.fetch(f"{self.uri}/{shard.file}", shard)
        path = self.folder / shard.file
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DataError(f"{path}: missing split file ({error.strerror})") from None
        check(data, shard, str(path))
        return data

    def text(self, name: str) -> str:
        """A small file that has no recorded sha256 (metadata.json)."""
        if self.folder is not None:
            try:
                return (self.folder / name).read_text()
            except FileNotFoundError:
                raise DataError(f"no {name} there") from None
        with tempfile.TemporaryDirectory() as tmp:
            return Path(download_file(f"{self.uri}/{name}", tmp)).read_text()

    def array(self, shard: Shard) -> np.ndarray:
        return npy_array(self.read(shard), f"{self.uri}/{shard.file}")


class ShardedImages:
    """A split's (N, H, W[, C]) uint8 images as shards: indexed like an array (rows gathered
    from the shards that hold them), or streamed a batch at a time by `batches`."""

    dtype = np.dtype(np.uint8)

    def __init__(self, location: Location, shards: Sequence[Shard], pixel_shape: tuple):
        self.location, self.shards = location, list(shards)
        self.starts = np.cumsum([0, *(s.count for s in self.shards)])
        self.shape = (int(self.starts[-1]), *pixel_shape)
        self.ndim = len(self.shape)
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()  # the last 2 shards read

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def counts(self) -> list[int]:
        return [s.count for s in self.shards]

    def shard(self, number: int) -> np.ndarray:
        array = self.location.array(self.shards[number])
        if array.shape[1:] != self.shape[1:] or len(array) != self.shards[number].count:
            raise DataError(
                f"{self.shards[number].file} holds {array.shape}; expected "
                f"({self.shards[number].count}, {', '.join(map(str, self.shape[1:]))})"
            )
        return array

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            rows = np.arange(*index.indices(len(self)))
        else:
            rows = np.asarray(index)
            if rows.dtype == bool:  # a mask over the images
                rows = np.flatnonzero(rows)
            rows = rows.astype(np.int64, copy=False)
            if rows.ndim == 0:
                return self[rows[None]][0]
        return self._gather(rows, self._cached)

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def _cached(self, number: int) -> np.ndarray:
        if number in self._recent:
            self._recent.move_to_end(number)
        else:
            self._recent[number] = self.shard(number)
            while len(self._recent) > 2:
                self._recent.popitem(last=False)
        return self._recent[number]

    def _gather(self, rows: np.ndarray, shard_of) -> np.ndarray:
        rows = np.where(rows < 0, rows + len(self), rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        owner = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for number in np.unique(owner):
            mask = owner == number
            out[mask] = shard_of(int(number))[rows[mask] - self.starts[number]]
        return out

    def batches(self, chunks: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        """The images of each chunk of row numbers, in turn. A reader thread reads (and checks)
        the shards in the order the chunks first need them, one ahead of those in use; a
        shard is dropped after the last chunk that needs it, so with epoch_order's windows a
        window's shards are held at a time. Gathering stays on the caller's thread: the
        reader's work (file reads, sha256) runs without the GIL, and steals no time from a
        training loop's Python."""
        chunks = [np.asarray(chunk, dtype=np.int64) for chunk in chunks]
        owners = [np.unique(np.searchsorted(self.starts, c, side="right") - 1) for c in chunks]
        first_use: dict[int, int] = {}
        last_use: dict[int, int] = {}
        for i, numbers in enumerate(owners):
            for number in map(int, numbers):
                first_use.setdefault(number, i)
                last_use[number] = i
        held: dict[int, np.ndarray] = {}
        failed: list[BaseException] = []
        changed = threading.Condition()
        room = threading.Semaphore(_most_in_use(first_use, last_use) + 1)
        stop = threading.Event()

        def read() -> None:
            for number in sorted(first_use, key=first_use.get):
                while not room.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                try:
                    array = self.shard(number)
                except BaseException as error:  # handed to the caller, which raises it
                    array, failed[:] = None, [error]
                with changed:
                    held[number] = array
                    changed.notify_all()
                if failed:
                    return

        reader = threading.Thread(target=read, name="shard-reader", daemon=True)
        reader.start()

        def shard_of(number: int) -> np.ndarray:
            with changed:
                changed.wait_for(lambda: number in held or failed)
            if failed:
                raise failed[0]
            return held[number]

        try:
            for i, chunk in enumerate(chunks):
                yield self._gather(chunk, shard_of)
                for number in map(int, owners[i]):
                    if last_use[number] == i:
                        with changed:
                            del held[number]
                        room.release()
        finally:
            stop.set()
            reader.join(timeout=5)


def _most_in_use(first_use: dict[int, int], last_use: dict[int, int]) -> int:
    """The most shards any one chunk's reading holds at once: those whose chunks span it."""
    events = sorted(
        [(first, 1) for first in first_use.values()]
        + [(last + 1, -1) for last in last_use.values()]
    )
    most = live = 0
    for _, change in events:
        live += change
        most = max(most, live)
    return most
