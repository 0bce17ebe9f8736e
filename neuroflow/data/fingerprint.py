"""A source's fingerprint: what the step cache knows of the data's content before preprocess
reads it, so that changed images re-run preprocess and everything after it.

- A folder (IDX files, pictures by class, the MNIST family's raw files): every file's path,
  size and content, or, when the folder holds more than HASH_LIMIT bytes, its path, size and
  modification time.
- An archive, a Parquet file or any other single file: its sha256.
- The bundled digits: the version of scikit-learn, which bundles them.
- A table read through Spark: its row count and the sum of each row's hash
  (neuroflow.data.spark.table_fingerprint).

A fingerprint is "<how>:<sha256 hex>", how being content, stat, package or rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HASH_LIMIT = 1 << 30  # bytes read in full; above, a file's size and mtime stand for its content
TAG = "source_fingerprint"  # on each preprocess run


def fingerprint(
    dataset: str, data_dir: str, columns: tuple[str, str] = ("image", "label")
) -> str | None:
    """The fingerprint of what preprocess would read for `dataset` from `data_dir` (a table's
    image and label `columns`), or None when nothing is there yet (a download to come, or a
    path that does not exist)."""
    if dataset == "digits":
        from importlib.metadata import version

        return _hex("package", f"scikit-learn=={version('scikit-learn')}".encode())
    if dataset == "table":
        from neuroflow.data.spark import table_fingerprint

        return table_fingerprint(data_dir, *columns)
    from neuroflow.data.sources import FOLDERS, TORCHVISION

    path = Path(data_dir).expanduser().resolve()
    if dataset not in FOLDERS:  # the MNIST family: its raw IDX files (see sources._torchvision)
        path = path / TORCHVISION[dataset][0] / "raw"
    if path.is_file():
        return f"content:{_file_sha256(path)}"
    if path.is_dir():
        return _folder(path)
    return None


def _folder(folder: Path) -> str | None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        return None
    stats = [p.stat() for p in files]
    by_content = sum(s.st_size for s in stats) <= HASH_LIMIT
    digest = hashlib.sha256()
    for path, stat in zip(files, stats, strict=True):
        name = path.relative_to(folder).as_posix()
        content = _file_sha256(path) if by_content else str(stat.st_mtime_ns)
        digest.update(f"{name}\0{stat.st_size}\0{content}\0".encode())
    return f"{'content' if by_content else 'stat'}:{digest.hexdigest()}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _hex(how: str, data: bytes) -> str:
    return f"{how}:{hashlib.sha256(data).hexdigest()}"
