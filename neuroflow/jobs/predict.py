"""predict: score a set of images with a registered classifier, a batch at a time, and log
predictions.parquet (an id or path per image, the predicted class and its probability), with
accuracy and a confusion matrix when the images have labels."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np

from neuroflow.data.framing import InputRule
from neuroflow.data.inputs import Inputs, open_inputs
from neuroflow.data.prepared import Prepared, open_prepared
from neuroflow.data.spark import spark_session
from neuroflow.errors import RunLookupError
from neuroflow.settings import PredictConfig
from neuroflow.tracking import plots
from neuroflow.tracking.lineage import provenance_tags
from neuroflow.tracking.models import fetch_model
from neuroflow.tracking.networks import PROBABILITIES
from neuroflow.tracking.runs import (
    STEP_TAG,
    experiment_id,
    log_params_once,
    params_of,
    resolve_data,
)

PREDICTIONS = "predictions.parquet"
EXPECTED = "a models:/ URI of a classifier this project logged"


def predict(config: PredictConfig) -> dict[str, float]:
    """In the active run. Returns the metrics it logged."""
    mlflow.set_tags({STEP_TAG: "predict", **provenance_tags()})
    log_params_once(params_of(config))
    mlflow.set_tag("model_uri", config.model)
    with tempfile.TemporaryDirectory() as tmp:
        # Every file checked against its recorded digest before MLflow imports its code.
        fetched = fetch_model(config.model, Path(tmp) / "model", "model", EXPECTED)
        local, recorded = fetched.folder, fetched.recorded
        if recorded.version:  # what the URI named when it ran, even after the alias moves
            mlflow.set_tags({"model_name": recorded.name, "model_version": recorded.version})
        model = mlflow.pyfunc.load_model(str(local))
        shape = model.metadata.get_input_schema().inputs[0].shape
        if len(shape) not in (3, 4):  # (-1, H, W) grey, (-1, H, W, C) colour
            raise RunLookupError(
                f"model {config.model} takes inputs of shape {shape}, so it is not a classifier; "
                f"expected {EXPECTED}"
            )
        network = model.unwrap_python_model().network
        rule = InputRule.from_dict(network.input_rule, shape[1])  # the model's, not the digits'
        classes = list(network.classes)
        columns = (config.image_column, config.label_column)
        inputs = open_inputs(config.data, rule, prepared, classes, columns)
        if inputs.count == 0:
            raise RunLookupError(f"data {config.data!r} holds no images; expected at least one")
        log_input(inputs)
        out = Path(tmp) / PREDICTIONS
        started = time.perf_counter()
        if config.engine == "spark":
            predicted = score_on_spark(str(local), inputs, config.batch_size, Path(tmp), classes)
        else:
            predicted = score_locally(model, inputs, config.batch_size, out, classes)
        seconds = time.perf_counter() - started  # reading, scoring and writing; no start-up
        mlflow.log_artifact(str(out))
    metrics = {
        "images": float(inputs.count),
        "scoring_s": seconds,
        "images_per_s": inputs.count / seconds,
    }
    if inputs.labels is not None:
        labels = inputs.labels.astype(np.int64)
        metrics["accuracy"] = float((predicted == labels).mean())
        classes = network.classes
        matrix = plots.confusion_matrix(labels, predicted, len(classes))
        plots.log_confusion_matrix(matrix, classes)
        mlflow.log_dict({"classes": classes, "matrix": matrix.tolist()}, "confusion_matrix.json")
    mlflow.log_metrics(metrics)
    shown = f", accuracy {metrics['accuracy']:.4f}" if "accuracy" in metrics else ""
    print(f"predict: {inputs.count} images scored by {config.model}{shown}")
    return metrics


def prepared(run_id: str) -> Prepared:
    """The prepared data of preprocess run `run_id`, its images read a shard at a time."""
    return open_prepared(resolve_data(run_id, experiment_id()).uri, stream=True)


def log_input(inputs: Inputs) -> None:
    """The images as the run's input, by their source, without reading them again."""
    from mlflow.data.meta_dataset import MetaDataset

    from neuroflow.tracking.lineage import RunArtifactSource

    if inputs.uri.startswith("runs:/"):
        source = RunArtifactSource(inputs.uri)
    else:
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():  # two of MLflow's sources take a path; either will do
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            source = resolve_dataset_source(inputs.uri)
    mlflow.log_input(MetaDataset(source, name=inputs.name), context="inference")


def score_locally(
    model, inputs: Inputs, batch_size: int, out: Path, classes: list[str]
) -> np.ndarray:
    """Score `inputs` a batch at a time, appending each batch's rows (with each class's name)
    to the parquet file `out`. Returns the predicted class ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    predicted, writer = [], None
    try:
        for start, images in inputs.batches(batch_size):
            frame = model.predict(images.astype(np.float32), params={PROBABILITIES: True})
            stop = start + len(images)
            frame.insert(0, "id", inputs.ids(start, stop))
            frame.insert(2, "class_name", np.asarray(classes, dtype=object)[frame["class"]])
            if inputs.labels is not None:
                frame["label"] = inputs.labels[start:stop].astype(np.int64)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
            predicted.append(frame["class"].to_numpy())
    finally:
        if writer is not None:
            writer.close()
    return np.concatenate(predicted)


def score_on_spark(
    model_uri: str, inputs: Inputs, batch_size: int, tmp: Path, classes: list[str]
) -> np.ndarray:
    """Score `inputs` with the model as an mlflow.pyfunc.spark_udf. The images are staged as a
    parquet file of (id, pixels) rows, a batch at a time, which Spark reads in partitions, so
    neither the driver nor an executor holds them all. Writes tmp/PREDICTIONS; returns the
    predicted class ids, in the images' order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spark = spark_session("neuroflow-predict")
    staged, writer = tmp / "images.parquet", None
    try:
        for start, images in inputs.batches(batch_size):
            stop = start + len(images)
            columns = {
                "row": np.arange(start, stop, dtype=np.int64),
                "id": inputs.ids(start, stop),
                "pixels": list(images.reshape(len(images), -1).astype(np.float32)),
            }
            if inputs.labels is not None:
                columns["label"] = inputs.labels[start:stop].astype(np.int64)
            table = pa.table(columns)
            writer = writer or pq.ParquetWriter(staged, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    scored = mlflow.pyfunc.spark_udf(
        spark,
        model_uri,
        result_type="class long, probability double",
        env_manager="local",
        params={PROBABILITIES: True},
    )
    frame = spark.read.parquet(str(staged))
    frame = frame.withColumn("scored", scored("pixels")).select(
        "row",
        "id",
        "scored.class",
        "scored.probability",
        *(["label"] if inputs.labels is not None else []),
    )
    out = tmp / "spark-predictions"
    frame.orderBy("row").drop("row").coalesce(1).write.mode("overwrite").parquet(str(out))
    (part,) = out.glob("part-*.parquet")
    table = pq.read_table(part)
    predicted = table.column("class").to_numpy()
    names = pa.array(np.asarray(classes, dtype=object)[predicted], pa.string())
    pq.write_table(table.add_column(2, "class_name", names), tmp / PREDICTIONS)
    return predicted
