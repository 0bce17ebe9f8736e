"""A team's pictures in a Parquet table (dataset=parquet): encoded files or raw pixels, class ids
or names, the same prepared arrays as the IDX route for the same images, read a row group at a
time, and a one-line refusal for each way a table can be wrong."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import synthetic_digits
from neuroflow.data.framing import InputRule
from neuroflow.data.idx import write_idx
from neuroflow.data.prepared import prepare
from neuroflow.data.sources import load_source
from neuroflow.errors import DataError
from neuroflow.settings import PrepareConfig

RULE = InputRule(28, "pad")


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def prepared(dataset: str, data_dir: Path, tmp_path: Path, **settings) -> dict:
    config = PrepareConfig(dataset=dataset, data_dir=str(data_dir), **settings)
    rule = InputRule.for_source(dataset, config.image_size, config.mnist_framing)
    columns = (config.image_column, config.label_column)
    source = load_source(dataset, str(data_dir), rule, columns)
    return prepare(source, tmp_path / f"prepared-{dataset}", config)


def test_the_same_images_in_a_table_give_the_arrays_and_digests_of_the_idx_route(tmp_path):
    images, labels = synthetic_digits(300, seed=1)
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte", labels)
    table = pa.table({"image": [png(i) for i in images], "label": labels.astype(np.int64)})
    pq.write_table(table, tmp_path / "digits.parquet", row_group_size=64)  # 5 row groups
    from_idx = prepared("idx", tmp_path / "idx", tmp_path)
    from_table = prepared("parquet", tmp_path / "digits.parquet", tmp_path)
    for split in ("train", "val", "test"):
        assert from_table["splits"][split]["sha256"] == from_idx["splits"][split]["sha256"]
    assert from_table["digest"] == from_idx["digest"] and from_table["title"] == "digits"


def test_raw_pixels_class_names_and_hugging_face_image_structs_are_read(tmp_path):
    images, labels = synthetic_digits(60, classes=3, seed=2)
    names = np.array(["owl", "cat", "dog"])[labels]  # class ids come from the sorted names
    pixels = pa.table({"pixels": [i.ravel().tolist() for i in images], "kind": names})
    pq.write_table(pixels, tmp_path / "raw.parquet")
    structs = [{"bytes": png(i), "path": f"{n}.png"} for n, i in enumerate(images)]
    pq.write_table(pa.table({"image": structs, "label": names}), tmp_path / "hf.parquet")
    raw = prepared(
        "parquet", tmp_path / "raw.parquet", tmp_path, image_column="pixels", label_column="kind"
    )
    hugging_face = prepared("parquet", tmp_path / "hf.parquet", tmp_path / "hf")
    assert raw["classes"] == hugging_face["classes"] == ["cat", "dog", "owl"]
    assert raw["digest"] == hugging_face["digest"]


def test_a_folder_of_parquet_files_is_one_table(tmp_path):
    images, labels = synthetic_digits(60, seed=3)
    (tmp_path / "parts").mkdir()
    for part, rows in enumerate((slice(0, 25), slice(25, 60))):
        table = pa.table({"image": [png(i) for i in images[rows]], "label": labels[rows]})
        pq.write_table(table, tmp_path / "parts" / f"part-{part}.parquet")
    pq.write_table(
        pa.table({"image": [png(i) for i in images], "label": labels}), tmp_path / "one.parquet"
    )
    assert (
        prepared("parquet", tmp_path / "parts", tmp_path)["digest"]
        == prepared("parquet", tmp_path / "one.parquet", tmp_path / "one")["digest"]
    )


def _write(tmp_path: Path, **columns) -> Path:
    images, labels = synthetic_digits(60, seed=4)
    data = {"image": [png(i) for i in images], "label": labels.astype(np.int64)}
    data.update({name: make(images, labels) for name, make in columns.items()})
    pq.write_table(pa.table(data), tmp_path / "t.parquet")
    return tmp_path / "t.parquet"


def _undecodable(images, labels):
    cells = [png(i) for i in images]
    cells[7] = b"not a picture"
    return cells


BAD_TABLES = [
    ({"label_column": "class"}, {}, "has no column 'class' (its columns: image, label)"),
    (
        {},
        {"label": lambda images, labels: labels.astype(np.float64)},
        "label column 'label' holds double",
    ),
    ({}, {"image": _undecodable}, "t.parquet row 7 cannot be read as an image"),
    (
        {},
        {"label": lambda images, labels: np.zeros_like(labels)},
        "has 1 class; expected two or more",
    ),
    (
        {},
        {"image": lambda images, labels: [list(range(10))] * len(labels)},
        "holds 10 pixel values; expected the H x W values of a square grey picture",
    ),
]


@pytest.mark.parametrize(("settings", "columns", "message"), BAD_TABLES)
def test_a_table_out_of_its_shape_is_refused_with_one_line(tmp_path, settings, columns, message):
    path = _write(tmp_path, **columns)
    with pytest.raises(DataError) as error:
        prepared("parquet", path, tmp_path, **settings)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_file_that_is_not_parquet_or_not_there_is_refused(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 and nothing else")
    with pytest.raises(DataError, match="broken.parquet cannot be read as Parquet"):
        load_source("parquet", str(tmp_path / "broken.parquet"), RULE)
    with pytest.raises(DataError, match="is not a Parquet file or a folder of them"):
        load_source("parquet", str(tmp_path / "missing.parquet"), RULE)


def test_a_delta_table_is_read_at_its_current_version_and_each_commit_is_new_data(tmp_path):
    deltalake = pytest.importorskip("deltalake")  # the Delta extra, which make test installs
    from neuroflow.data.fingerprint import fingerprint

    images, labels = synthetic_digits(90, seed=5)
    rows = pa.table({"image": [png(i) for i in images], "label": labels.astype(np.int64)})
    deltalake.write_deltalake(str(tmp_path / "pets"), rows.slice(0, 60))
    first = fingerprint("delta", str(tmp_path / "pets"))
    deltalake.write_deltalake(str(tmp_path / "pets"), rows.slice(60), mode="append")
    assert fingerprint("delta", str(tmp_path / "pets")) != first  # a commit re-runs preprocess
    pq.write_table(rows, tmp_path / "same.parquet")
    from_delta = prepared("delta", tmp_path / "pets", tmp_path)
    assert (
        from_delta["digest"] == prepared("parquet", tmp_path / "same.parquet", tmp_path)["digest"]
    )
    assert from_delta["title"] == "pets" and from_delta["dataset"] == "delta"

    (log,) = sorted((tmp_path / "pets" / "_delta_log").glob("*.json"))[-1:]
    log.write_text("{ not json")
    with pytest.raises(DataError, match="its Delta log cannot be read"):
        load_source("delta", str(tmp_path / "pets"), RULE)
    with pytest.raises(DataError, match="has no _delta_log; expected the folder of a Delta"):
        load_source("delta", str(tmp_path), RULE)


@pytest.fixture
def spark(tmp_path):
    """A local SparkSession whose tables live under tmp_path: the session the steps find
    active, as a Databricks cluster's would be."""
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.warehouse.dir", str(tmp_path / "warehouse"))
        .config("spark.sql.shuffle.partitions", "3")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.mark.slow  # a local Spark: 10-20 s to start
def test_a_table_is_read_through_spark_in_an_order_fixed_by_its_rows(spark, tracking, tmp_path):
    """dataset=table: the pictures of a table in the session's catalog, as a Parquet table's
    are; the same rows written in another order prepare to the same digests; a row added
    changes the fingerprint; a table that is not there, or lacks a column, is one line."""
    from neuroflow.data.fingerprint import fingerprint
    from neuroflow.jobs.preprocess import preprocess

    images, labels = synthetic_digits(120, classes=3, seed=4)
    names = np.array(["owl", "cat", "dog"])[labels]
    rows = [(png(image), str(name)) for image, name in zip(images, names, strict=True)]
    spark.createDataFrame(rows, "image binary, label string").write.saveAsTable("pets")
    spark.createDataFrame(rows[::-1], "image binary, label string").repartition(
        4
    ).write.saveAsTable("pets_shuffled")
    import mlflow

    with mlflow.start_run():
        ref = preprocess(PrepareConfig(dataset="table", data_dir="default.pets"))
    meta = prepared("table", "default.pets_shuffled", tmp_path)
    assert meta["digest"] == ref.digest and meta["classes"] == ["cat", "dog", "owl"]
    assert meta["title"] == "pets_shuffled" and meta["source"] == "table:default.pets_shuffled"
    assert sum(info["count"] for info in meta["splits"].values()) == 120

    before = fingerprint("table", "default.pets")
    assert before.startswith("rows:") and fingerprint("table", "default.pets") == before
    spark.createDataFrame(rows[:1], "image binary, label string").write.insertInto("pets")
    assert fingerprint("table", "default.pets") != before

    with pytest.raises(DataError, match="table default.nothing cannot be read"):
        load_source("table", "default.nothing", RULE)
    with pytest.raises(DataError, match="table default.pets has no column 'kind'"):
        load_source("table", "default.pets", RULE, ("image", "kind"))
