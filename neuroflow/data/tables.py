"""A team's pictures in a table: a Parquet file, a folder of them (one table split in files), or
a Delta table (its current version's files, listed by its log through deltalake: the Delta
extra, `pip install -r requirements-delta.txt`; the image and label columns may not be
partition columns).

Each row is one picture and its class. The image column (`image_column`, default "image")
holds the encoded file (bytes of a PNG, JPEG, BMP or WebP; or a struct with a "bytes" field, as
Hugging Face datasets write them) or the raw pixels of a square picture: a list of H x W grey
values, or of H x W x 3 colour values (red, green, blue for each pixel, rows first). The
label column (`label_column`, default "label") holds integer class ids or class names (strings,
sorted to give the ids); floats are refused. Pictures are decoded as a folder's are, grey or in
colour, brought to the `channels` setting's by the same rule (neuroflow.data.folders), and
fitted into the frame by the input rule.

The labels are read first, a column alone; the images only as prepare asks for them, a row group
at a time, so memory holds one row group's images whatever the table's size.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from neuroflow.data.folders import LazyImages, in_colour, opened, picture_from
from neuroflow.errors import DataError


class TableImages(LazyImages):
    """The pictures of a table's image column, a row group read when one of its rows is."""

    def __init__(self, files: list, column: str, rule, where: str):
        import pyarrow.parquet as pq

        self.column, self.where = column, where
        self.groups = []  # (file, row group) of each row group, in the table's order
        starts = [0]
        for file in files:
            meta = pq.ParquetFile(file).metadata
            for group in range(meta.num_row_groups):
                self.groups.append((file, group))
                starts.append(starts[-1] + meta.row_group(group).num_rows)
        self.starts = np.array(starts)  # each group's first row, then the row count
        super().__init__(starts[-1], rule)
        self._cached = (None, None)  # (group index, its column as a list)

    def picture(self, row: int) -> np.ndarray:
        return self._decode(self._cell(row), row)

    def is_colour(self, row: int) -> bool:
        cell = self._cell(row)
        if isinstance(cell, dict):
            cell = cell.get("bytes")
        if isinstance(cell, bytes | bytearray):
            return opened(io.BytesIO(cell), self.name(row), in_colour)
        return self._decode(cell, row).ndim == 3

    def name(self, row: int) -> str:
        return f"{self.where} row {row}"

    def _cell(self, row: int):
        owner = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self._group(owner)[row - int(self.starts[owner])]

    def _group(self, owner: int) -> list:
        if self._cached[0] != owner:
            import pyarrow.parquet as pq

            file, group = self.groups[owner]
            table = pq.ParquetFile(file).read_row_group(group, columns=[self.column])
            self._cached = (owner, table.column(self.column).to_pylist())
        return self._cached[1]

    def _decode(self, cell, row: int) -> np.ndarray:
        if isinstance(cell, dict):
            cell = cell.get("bytes")
        if isinstance(cell, bytes | bytearray):
            return picture_from(io.BytesIO(cell), self.name(row))
        if isinstance(cell, list):
            # H x W grey values, or H x W x 3 colour ones: no count is both (sqrt 3 is irrational)
            channels = next((c for c in (1, 3) if _square(len(cell) // c) * c == len(cell)), 0)
            if not cell or not channels:
                raise DataError(
                    f"{self.name(row)} holds {len(cell)} pixel values; expected the H x W "
                    "values of a square grey picture, H x W x 3 of a colour one, or the bytes "
                    "of a picture file"
                )
            values = np.asarray(cell)
            if values.min() < 0 or values.max() > 255:
                raise DataError(f"{self.name(row)} holds pixel values outside 0..255")
            side = int(round((len(cell) // channels) ** 0.5))
            shape = (side, side) if channels == 1 else (side, side, channels)
            return values.reshape(shape).astype(np.uint8)
        raise DataError(
            f"{self.name(row)} holds {type(cell).__name__}; expected the bytes of a "
            "picture file or a list of pixel values"
        )


def _square(count: int) -> int:
    """count itself when it is a perfect square, else 0."""
    side = int(round(count**0.5))
    return count if side * side == count else 0


def open_table(path: Path, image_column: str, label_column: str, rule, delta: bool = False):
    """The classes of the table at `path` (a Parquet file, a folder of them, or with `delta` a
    Delta table) and its one part: (classes, images, labels). Raises a one-line DataError for
    a table that is not one of pictures and classes."""
    where = f"data_dir {path}"
    files = delta_files(path, where) if delta else table_files(path, where)
    return open_files(files, image_column, label_column, rule, where)


def open_files(files: list[Path], image_column: str, label_column: str, rule, where: str):
    """(classes, images, labels) of the table in the Parquet `files`; errors name `where`."""
    raw = read_labels(files, image_column, label_column, where, required=True)
    if np.issubdtype(raw.dtype, np.integer):
        ids = raw.astype(np.int64)
        classes = [str(c) for c in range(int(ids.max()) + 1 if len(ids) else 0)]
    else:
        classes = sorted(set(raw.tolist()))
        index = {name: i for i, name in enumerate(classes)}
        ids = np.array([index[name] for name in raw], np.int64)
    if len(classes) < 2:
        raise DataError(f"{where} has {len(classes)} class; expected two or more")
    return classes, TableImages(files, image_column, rule, where), ids


def read_labels(
    files: list[Path], image_column: str, label_column: str, where: str, required: bool
) -> np.ndarray | None:
    """The label column of the table in `files`: (N,) class ids (from 0) or class names; None
    when it has none and none is `required`. Checks the image column is there too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(files[0])
        wanted = (image_column, label_column) if required else (image_column,)
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise DataError(
                f"{where} has no column {missing[0]!r} (its columns: {', '.join(schema.names)});"
                " expected image_column and label_column to name its pictures and classes"
            )
        if label_column not in schema.names:
            return None
        kind = schema.field(label_column).type
        if not (
            pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
        ):
            raise DataError(
                f"{where}: label column {label_column!r} holds {kind}; expected integer class "
                "ids or class names"
            )
        raw = np.concatenate(
            [
                pq.read_table(f, columns=[label_column])
                .column(label_column)
                .to_numpy(zero_copy_only=False)
                for f in files
            ]
        )
    except (OSError, pa.ArrowException) as error:
        raise DataError(
            f"{where} cannot be read as Parquet ({str(error).splitlines()[0]})"
        ) from None
    if np.issubdtype(raw.dtype, np.integer) and len(raw) and raw.min() < 0:
        raise DataError(
            f"{where}: label column {label_column!r} holds {raw.min()}; expected class ids from 0"
        )
    return raw


def table_files(path: Path, where: str) -> list[Path]:
    """The Parquet files of the table at `path`: the file, or a folder's files in name order."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if files:
            return files
    raise DataError(
        f"{where} is not a Parquet file or a folder of them; expected a .parquet file, or a "
        "folder of .parquet files that together are one table"
    )


DELTA_EXTRA = "pip install -r requirements-delta.txt"  # deltalake, pinned


def delta_files(path: Path, where: str) -> list[Path]:
    """The Parquet files of a Delta table's current version, in the order they were added."""
    try:
        from deltalake import DeltaTable
    except ImportError:
        raise DataError(
            f"dataset delta needs deltalake, which is not installed: {DELTA_EXTRA}"
        ) from None
    if not (path / "_delta_log").is_dir():
        raise DataError(f"{where} has no _delta_log; expected the folder of a Delta table")
    try:
        actions = DeltaTable(str(path)).get_add_actions(flatten=True)
    except Exception as error:  # deltalake raises errors of its own for a broken log
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{where}: its Delta log cannot be read ({reason}); expected a Delta table"
        ) from None
    from urllib.parse import unquote

    # in the order they were committed: rows keep the order they were written in
    times, names = actions.column("modification_time"), actions.column("path")
    added = sorted(zip(times.to_pylist(), names.to_pylist(), strict=True))
    files = [path / unquote(name) for _, name in added]
    if not files:
        raise DataError(f"{where} is a Delta table with no files; expected its pictures")
    return files
