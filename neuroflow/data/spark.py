"""Spark, where the data or the scoring lives on a cluster: the active SparkSession (a Databricks
cluster's) or a local one on every core, and a table read through it.

dataset=table names a table (`<catalog>.<schema>.<table>` in Unity Catalog, or `<schema>.<table>`
or `<table>` in the session's catalog) of pictures and classes, the columns of a Parquet table
(neuroflow.data.tables). Spark writes the image and label columns to a temporary Parquet folder,
each executor its partitions, in one order fixed by the rows' content (a hash of the picture,
then the label), so the same rows prepare to the same digests however the table is laid out in
files. The pictures are then read from it a row group at a time, as a Parquet table's are: no
process holds the table whole.

Its fingerprint, which the step cache compares, is the count of its rows and the sum of a hash
of each, one pass of the cluster over the two columns: any row added, removed or changed
changes it.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

from neuroflow.errors import DataError

SPARK_EXTRA = "pip install -r requirements-spark.txt"  # pyspark, pinned
TABLE_NAME = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*){0,2}$")  # [catalog.][schema.]table


def spark_session(app: str = "neuroflow"):
    """The active SparkSession (a Databricks cluster's), or a local one on every core."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DataError(f"Spark is needed but pyspark is not installed: {SPARK_EXTRA}") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    return (
        SparkSession.builder.master("local[*]")
        .appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "1024")
        .getOrCreate()
    )


def _columns(name: str, image_column: str, label_column: str):
    """The table's image and label columns as a DataFrame; one line for a table that is not
    there or lacks one."""
    from pyspark.errors import AnalysisException

    spark = spark_session("neuroflow-preprocess")
    try:
        frame = spark.table(name)
    except AnalysisException as error:
        reason = str(error).splitlines()[0]
        raise DataError(
            f"table {name} cannot be read ({reason}); expected a table's name"
        ) from None
    missing = [c for c in (image_column, label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"table {name} has no column {missing[0]!r} (its columns: {', '.join(frame.columns)});"
            " expected image_column and label_column to name its pictures and classes"
        )
    return frame.select(image_column, label_column)


def stage_table(name: str, image_column: str, label_column: str):
    """The table's pictures and classes written as Parquet files in content order: (files,
    the temporary folder holding them, removed when it is)."""
    from pyspark.sql import functions as F

    frame = _columns(name, image_column, label_column)
    staged = tempfile.TemporaryDirectory(prefix="neuroflow-table-")
    try:
        ordered = frame.orderBy(F.xxhash64(image_column), label_column)
        ordered.write.mode("overwrite").parquet(staged.name + "/rows")
        files = sorted(Path(staged.name, "rows").glob("part-*.parquet"))
    except BaseException:
        staged.cleanup()
        raise
    if not files:
        staged.cleanup()
        raise DataError(f"table {name} has no rows; expected its pictures")
    return files, staged


def table_fingerprint(name: str, image_column: str, label_column: str) -> str:
    """ "rows:<sha256>" of the table's row count and the sum of each row's hash."""
    from pyspark.sql import functions as F

    frame = _columns(name, image_column, label_column)
    # the sum of 64-bit hashes, taken in decimal so that it cannot overflow
    row = F.xxhash64(image_column, label_column).cast("decimal(38,0)")
    count, total = frame.agg(F.count(F.lit(1)), F.sum(row)).first()
    return "rows:" + hashlib.sha256(f"{name}\0{count}\0{total}".encode()).hexdigest()
