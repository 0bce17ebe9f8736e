"""predict in process against a throwaway store: every kind of input, the parquet it writes,
the accuracy it logs, the version it records, and what it refuses."""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest

from helpers import copy_of, synthetic_digits, write_idx_folder
from neuroflow.errors import NeuroflowError
from neuroflow.families import CNNConfig
from neuroflow.jobs.predict import PREDICTIONS, predict
from neuroflow.jobs.register import register
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.settings import PredictConfig, TrainConfig

MODEL = "models:/idx_cnn@challenger"


@pytest.fixture(scope="module")
def scored_store(prepared_store, tmp_path_factory) -> SimpleNamespace:
    """Made once: prepared_store with a small CNN trained and registered as idx_cnn v1."""
    root = tmp_path_factory.mktemp("predict")
    with copy_of(prepared_store.folder, root):
        with mlflow.start_run() as training:
            config = TrainConfig(epochs=3, device="cpu")
            train_classifier("cnn", CNNConfig(channels=(4, 8), hidden=16), config, "latest")
        with mlflow.start_run():
            register(training.info.run_id, "", "", "")
    return SimpleNamespace(folder=root / "store", data=prepared_store.ref, training=training)


@pytest.fixture
def scored(scored_store, tmp_path) -> SimpleNamespace:
    with copy_of(scored_store.folder, tmp_path):
        yield scored_store


def run_predict(data: str, **options):
    with mlflow.start_run() as run:
        predict(PredictConfig(model=options.pop("model", MODEL), data=data, **options))
    run = mlflow.get_run(run.info.run_id)
    table = pd.read_parquet(
        mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/{PREDICTIONS}")
    )
    return run, table


def test_a_preprocess_run_is_scored_on_its_test_split_as_training_scored_it(scored):
    run, table = run_predict(scored.data.run_id)
    training = mlflow.get_run(scored.training.info.run_id)
    assert list(table.columns) == ["id", "class", "class_name", "probability", "label"]
    assert len(table) == 100 and table["id"].iloc[0] == "test/0"
    assert run.data.metrics["accuracy"] == pytest.approx(training.data.metrics["test_accuracy"])
    assert ((table["probability"] > 0) & (table["probability"] <= 1)).all()
    assert run.data.tags["model_name"] == "idx_cnn" and run.data.tags["model_version"] == "1"
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.source_type == "mlflow_run_artifact"
    assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "inference"
    assert "plots/confusion_matrix.png" in {
        f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")
    }


def test_the_model_is_downloaded_once(scored, monkeypatch):
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    downloads = []
    download = ModelsArtifactRepository.download_artifacts

    def counted(self, *args, **kwargs):
        downloads.append(self.artifact_uri)
        return download(self, *args, **kwargs)

    monkeypatch.setattr(ModelsArtifactRepository, "download_artifacts", counted)
    with mlflow.start_run():
        predict(PredictConfig(model=MODEL, data=scored.data.run_id))
    assert downloads == ["models:/idx_cnn/1"]  # the alias, resolved once to its version


def test_batches_of_any_size_give_the_same_predictions(scored):
    _, whole = run_predict(scored.data.run_id)
    _, small = run_predict(scored.data.run_id, batch_size=7)
    pd.testing.assert_frame_equal(whole, small)


def test_an_array_is_scored_as_the_pyfunc_scores_it(scored, tmp_path):
    images, _ = synthetic_digits(30, seed=5)
    np.save(tmp_path / "images.npy", images)
    run, table = run_predict(str(tmp_path / "images.npy"))
    expected = mlflow.pyfunc.load_model(MODEL).predict(images.astype(np.float32))
    assert table["class"].tolist() == expected.tolist()
    assert "label" not in table and "accuracy" not in run.data.metrics
    assert run.data.metrics["images"] == 30


def test_an_idx_folder_is_scored_with_its_labels(scored, tmp_path):
    run, table = run_predict(str(write_idx_folder(tmp_path / "idx")))
    assert len(table) == 400 and "label" in table
    assert run.data.metrics["accuracy"] == pytest.approx((table["class"] == table["label"]).mean())


def test_pictures_of_any_size_are_framed_like_the_digits(scored, tmp_path):
    from PIL import Image

    images, _ = synthetic_digits(5, size=56, seed=3)
    folder = tmp_path / "pictures"
    (folder / "more").mkdir(parents=True)
    for i, image in enumerate(images):  # dark ink on light paper, as a scan would be
        Image.fromarray(255 - image).save(folder / ("more" if i % 2 else ".") / f"digit{i}.png")
    run, table = run_predict(str(folder))
    assert sorted(table["id"]) == sorted(
        ["digit0.png", "digit2.png", "digit4.png", "more/digit1.png", "more/digit3.png"]
    )
    assert run.data.metrics["images"] == 5


def test_class_folders_give_labels_an_accuracy_and_class_names(scored, tmp_path):
    from PIL import Image

    images, labels = synthetic_digits(40, seed=4)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        home = tmp_path / "by_class" / str(label)
        home.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(home / f"{index:03d}.png")
    run, table = run_predict(str(tmp_path / "by_class"))
    assert sorted(table["label"]) == sorted(labels.tolist())
    assert (table["label"] == table["id"].str.split("/").str[0].astype(int)).all()
    assert (table["class_name"] == table["class"].astype(str)).all()  # classes "0".."9"
    assert run.data.metrics["accuracy"] == pytest.approx((table["class"] == table["label"]).mean())
    (home := tmp_path / "by_class" / "cat").mkdir()
    Image.fromarray(images[0]).save(home / "0.png")
    with mlflow.start_run(), pytest.raises(NeuroflowError, match="and folder 'cat'; expected"):
        predict(PredictConfig(model=MODEL, data=str(tmp_path / "by_class")))


def test_a_parquet_table_is_scored_with_its_labels_ids_or_names(scored, tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    images, labels = synthetic_digits(30, seed=6)
    files = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        files.append(buffer.getvalue())
    names = [str(label) for label in labels]  # the model's classes are "0".."9"
    pq.write_table(pa.table({"image": files, "label": labels}), tmp_path / "ids.parquet")
    pq.write_table(pa.table({"picture": files, "digit": names}), tmp_path / "names.parquet")
    pq.write_table(pa.table({"image": files}), tmp_path / "unlabelled.parquet")
    run, by_id = run_predict(str(tmp_path / "ids.parquet"))
    _, by_name = run_predict(
        str(tmp_path / "names.parquet"), image_column="picture", label_column="digit"
    )
    _, unlabelled = run_predict(str(tmp_path / "unlabelled.parquet"))
    assert by_id["label"].tolist() == labels.tolist() == by_name["label"].tolist()
    assert by_id["class"].tolist() == by_name["class"].tolist() == unlabelled["class"].tolist()
    assert "label" not in unlabelled and by_id["id"].iloc[0] == "row 0"
    assert run.data.metrics["accuracy"] == pytest.approx((by_id["class"] == by_id["label"]).mean())
    pq.write_table(pa.table({"image": files, "label": ["cat"] * 30}), tmp_path / "cats.parquet")
    with mlflow.start_run(), pytest.raises(NeuroflowError, match="label 'cat' is not a class of"):
        predict(PredictConfig(model=MODEL, data=str(tmp_path / "cats.parquet")))


@pytest.mark.parametrize(
    ("data", "model", "message"),
    [
        ("{missing}", MODEL, "does not exist; expected a folder or archive of IDX files"),
        ("{empty}", MODEL, "holds no IDX pairs"),
        ("{broken}", MODEL, "broken.png cannot be read as an image"),
        (
            "{array}",
            "models:/nothing@champion",
            "model models:/nothing@champion cannot be loaded: Registered Model with name=nothing",
        ),
    ],
)
def test_bad_input_is_refused_with_one_line(scored, tmp_path, data, model, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "broken.png").write_text("not a picture")
    np.save(tmp_path / "array.npy", np.zeros((2, 28, 28), np.uint8))
    values = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "broken": tmp_path / "pictures",
        "array": tmp_path / "array.npy",
    }
    with mlflow.start_run(), pytest.raises(NeuroflowError, match=message) as refused:
        predict(PredictConfig(model=model, data=data.format(**values)))
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_spark_gives_the_predictions_local_scoring_gives(scored, tmp_path):
    _, local = run_predict(str(write_idx_folder(tmp_path / "idx")))
    run, spark = run_predict(str(tmp_path / "idx"), engine="spark", batch_size=64)
    pd.testing.assert_frame_equal(local, spark, check_dtype=False)
    assert run.data.metrics["accuracy"] == pytest.approx((local["class"] == local["label"]).mean())


def test_spark_without_pyspark_names_the_extra(scored, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # as if pyspark were not installed
    with mlflow.start_run(), pytest.raises(NeuroflowError, match="requirements-spark.txt"):
        predict(PredictConfig(model=MODEL, data=scored.data.run_id, engine="spark"))
