"""Data identity, from preprocess to predict: each test replays a way a step was once silently
wrong about which data it held (the step cache, register, tune, promote, model names, predict,
resume and ties), and asserts the right outcome."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient

from helpers import step_in_process, synthetic_digits, write_idx_folder
from neuroflow.data.idx import write_idx
from neuroflow.errors import NeuroflowError, RunLookupError
from neuroflow.families import MLPConfig
from neuroflow.jobs.preprocess import preprocess
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.jobs.tune import tune
from neuroflow.settings import PipelineConfig, PrepareConfig, TrainConfig, TuneConfig

SMALL_MLP = MLPConfig(hidden=(16,))
QUICK = TrainConfig(epochs=3, batch_size=64, max_batches=2, device="cpu")


class Crash(Exception):
    pass


def prepare(dataset="digits", **overrides):
    with mlflow.start_run():
        return preprocess(PrepareConfig(dataset=dataset, **overrides))


def crash_in_epoch_2(model, epoch):  # after epoch 2's checkpoint is logged
    if epoch == 2:
        raise Crash


def test_resume_with_data_latest_resumes_only_a_run_on_the_data_latest_names_now(prepared):
    """A run on the IDX data crashed; then the digits became the latest data. resume=true with
    data=latest once resumed the IDX run and trained on the IDX images."""
    with pytest.raises(Crash), mlflow.start_run() as broken:
        train_classifier("mlp", SMALL_MLP, QUICK, "latest", watch=crash_in_epoch_2)
    assert MlflowClient().get_run(broken.info.run_id).info.status == "FAILED"
    digits = prepare("digits")

    with mlflow.start_run() as fresh:
        train_classifier("mlp", SMALL_MLP, QUICK, "latest", resume=True)
    fresh = mlflow.get_run(fresh.info.run_id)
    assert "resumed_from" not in fresh.data.tags
    assert fresh.data.params["data_run_id"] == digits.run_id

    with mlflow.start_run() as resumed:  # named by its run id, the IDX data is resumed
        train_classifier("mlp", SMALL_MLP, QUICK, prepared.run_id, resume=True)
    resumed = mlflow.get_run(resumed.info.run_id)
    assert resumed.data.tags["resumed_from"] == broken.info.run_id
    assert resumed.data.params["data_run_id"] == prepared.run_id


def test_tune_on_other_data_searches_afresh_and_a_named_study_of_other_data_is_refused(prepared):
    """The default study was tune-<family> for any data: a tune on MNIST resumed the digits'
    study, ran no trials, and logged a digits-trained network with MNIST's lineage."""
    config = TuneConfig(family="mlp", trials=2, epochs=1, pruner="none")

    def run_tune(**overrides):
        with mlflow.start_run() as run:
            tune(dataclasses.replace(config, **overrides))
        return mlflow.get_run(run.info.run_id)

    on_idx = run_tune(data=prepared.run_id)
    digits = prepare("digits")
    on_digits = run_tune(data=digits.run_id)
    assert on_digits.data.tags["study"] != on_idx.data.tags["study"]
    assert "resumed_study_from" not in on_digits.data.tags
    assert on_digits.data.metrics["trials_complete"] == 2  # it searched, on the digits

    named = run_tune(data=prepared.run_id, study="team")
    with pytest.raises(
        NeuroflowError,
        match=f"study 'team' holds trials trained on data digest "
        f"{prepared.digest}; this tune's data has digest {digits.digest}",
    ):
        run_tune(data=digits.run_id, study="team")
    assert named.data.tags["study"] == "team"


def test_other_images_under_the_same_file_names_rerun_preprocess_and_every_step_after(
    tracking, tmp_path, monkeypatch
):
    """main on an IDX folder, then the same main after its 300 training images were replaced by
    300 others under the same file names, once reused preprocess, train_mlp and register."""
    from neuroflow.jobs import main as main_job

    folder = write_idx_folder(tmp_path / "F")
    ran = []

    def in_process(uri, entry_point, parameters, **_):  # `mlflow run` of a step, in process
        ran.append(entry_point)
        result = step_in_process(entry_point, tracking, **parameters)
        assert result.returncode == 0, result.stderr
        return SimpleNamespace(run_id=result.run_id)

    monkeypatch.setattr(main_job.mlflow, "run", in_process)
    config = PipelineConfig(
        dataset="idx", data_dir=str(folder), models=("mlp",), epochs=1, promote=False
    )

    def main():
        ran.clear()
        with mlflow.start_run():
            pipeline = main_job.Pipeline(config)
        data = pipeline.prepare()
        digest = data.data.tags["data_digest"]
        trained = pipeline.train("mlp", data.info.run_id, data_digest=digest)
        pipeline.register_and_promote("mlp", trained, main_job.Row("mlp"))
        return list(ran), digest, trained.data.params["data_digest"]

    first, first_digest, _ = main()
    assert first == ["preprocess", "train_mlp", "register"]
    assert main()[0] == [], "nothing was touched, so every step is reused"

    images, _ = synthetic_digits(300, seed=7)  # 300 other images, the same file name and size
    write_idx(folder / "train-images-idx3-ubyte", images)
    again, digest, trained_on = main()
    assert again == ["preprocess", "train_mlp", "register"]
    assert digest != first_digest and trained_on == digest
    assert main()[0] == []


def test_a_fingerprint_follows_every_file_of_the_source(tmp_path, monkeypatch):
    import os

    from neuroflow.data import fingerprint as fp

    folder = write_idx_folder(tmp_path / "F")
    original = fp.fingerprint("idx", str(folder))
    (folder / "notes.txt").write_text("added")
    added = fp.fingerprint("idx", str(folder))
    (folder / "notes.txt").write_text("edited")
    edited = fp.fingerprint("idx", str(folder))
    (folder / "notes.txt").unlink()
    assert len({original, added, edited}) == 3 and original.startswith("content:")
    assert fp.fingerprint("idx", str(folder)) == original  # removed again
    os.utime(folder / "train-images-idx3-ubyte", ns=(1, 1))
    assert fp.fingerprint("idx", str(folder)) == original  # its content is what counts
    monkeypatch.setattr(fp, "HASH_LIMIT", 0)  # too large to read: size and mtime stand for it
    touched = fp.fingerprint("idx", str(folder))
    os.utime(folder / "train-images-idx3-ubyte", ns=(2, 2))
    assert touched.startswith("stat:") and fp.fingerprint("idx", str(folder)) != touched
    assert fp.fingerprint("idx", str(tmp_path / "nothing")) is None
    assert fp.fingerprint("digits", "").startswith("package:")


def trained_on(data, config=QUICK) -> str:
    with mlflow.start_run() as run:
        train_classifier("mlp", SMALL_MLP, config, data.run_id)
    return run.info.run_id


def registered(run_id: str, model_name: str = "") -> str:
    from neuroflow.jobs.register import register

    with mlflow.start_run():
        return str(register(run_id, "", model_name, "").version)


def promoted(model_name: str, candidate: str, **options):
    from neuroflow.jobs.promote import promote

    with mlflow.start_run():
        return promote(model_name, candidate, 0.0, "", False, **options)


def registry() -> bytes:
    from helpers import registry_bytes

    return registry_bytes(MlflowClient())


def test_register_without_a_run_id_chooses_among_runs_on_the_newest_runs_data(tracking, tmp_path):
    """train on the digits (0.9304), then on MNIST (0.9300), then register -P family=cnn
    -P model_name=mnist_cnn once registered the digits run as mnist_cnn version 1."""
    from neuroflow.jobs.register import register

    digits = prepare("digits")
    on_digits = trained_on(digits)
    MlflowClient().log_metric(on_digits, "test_accuracy", 0.99)  # the digits run scores best
    mnist = prepare("idx", data_dir=str(write_idx_folder(tmp_path / "mnist-t10k")))
    on_mnist = trained_on(mnist)

    with mlflow.start_run():
        version = register("", "mlp", "", "")
    assert version.run_id == on_mnist and version.name == "mnist_t10k_mlp"
    assert version.tags["dataset"] == "mnist-t10k"
    with mlflow.start_run():  # told otherwise, it chooses on that data
        assert register("", "mlp", "", "", data=digits.run_id).run_id == on_digits


def test_promote_scores_both_versions_only_on_test_images_neither_trained_on(tracking):
    """The champion was trained on the digits split with seed 0, the candidate with seed 1: 78%
    of the candidate's test images were in the champion's train or val split, and promote
    scored the champion on them (0.9777 against its honest 0.9666)."""
    import torch

    from neuroflow.data.prepared import load_prepared
    from neuroflow.data.unseen import unseen_test
    from neuroflow.tracking.models import load_model

    by_seed = [prepare("digits", seed=seed) for seed in (0, 1)]
    trained = [trained_on(data, TrainConfig(epochs=2, device="cpu")) for data in by_seed]
    assert registered(trained[0]) == "1" and promoted("digits_mlp", "1").decision.promote
    assert registered(trained[1]) == "2"
    champion, candidate = (
        load_prepared(Path(mlflow.artifacts.download_artifacts(data.uri))) for data in by_seed
    )
    seen = {h for p in (champion, candidate) for s in ("train", "val") for h in p.hashes[s]}
    unseen = [h for h in candidate.hashes["test"] if h not in seen]
    assert 0 < len(unseen) < len(candidate.hashes["test"]) / 2  # the champion saw most of it

    before = registry()
    with pytest.raises(RunLookupError, match=f"only {len(unseen)} test images are unseen by "):
        promoted("digits_mlp", "2")  # min_unseen=100 by default
    assert registry() == before

    outcome = promoted("digits_mlp", "2", min_unseen=len(unseen))
    assert outcome.test_images == len(unseen)
    images, labels = unseen_test(candidate, champion)
    assert len(labels) == len(unseen)
    with torch.no_grad():
        honest = load_model("models:/digits_mlp/1")(torch.from_numpy(images)).numpy() == labels
    assert outcome.champion_score == pytest.approx(honest.mean())


def test_versions_trained_on_other_datasets_are_not_compared_unless_told(tracking, tmp_path):
    """Every IDX folder was named idx_<family>, and promote compared a model of MNIST with one
    of another 10-class IDX folder: 'version 2 promoted: 0.9200 beats 0.0065'. The DCGAN's
    evaluator was checked only for its image shape and class count."""
    from neuroflow.data.prepared import load_prepared
    from neuroflow.jobs.train_dcgan import load_evaluator
    from neuroflow.settings import GANTrainConfig

    mnist = prepare("idx", data_dir=str(write_idx_folder(tmp_path / "mnist-t10k")))
    other = write_idx_folder(tmp_path / "letters")
    write_idx(other / "train-images-idx3-ubyte", synthetic_digits(300, seed=7)[0])
    letters = prepare("idx", data_dir=str(other))
    assert registered(trained_on(mnist)) == "1"  # as mnist_t10k_mlp, after the folder's name
    promoted("mnist_t10k_mlp", "1")
    on_letters = trained_on(letters)
    assert registered(on_letters, "mnist_t10k_mlp") == "2"

    before = registry()
    with pytest.raises(
        RunLookupError,
        match="was trained on dataset 'letters' .* its champion version 1 on dataset "
        "'mnist-t10k'.*dataset_changed=true",
    ):
        promoted("mnist_t10k_mlp", "2")
    assert registry() == before
    assert promoted("mnist_t10k_mlp", "2", dataset_changed=True).test_images == 100
    assert registered(on_letters) == "1"  # by default, under the letters' own name

    prepared = load_prepared(Path(mlflow.artifacts.download_artifacts(letters.uri)))
    with pytest.raises(
        RunLookupError,
        match="evaluator models:/mnist_t10k_mlp/1 was trained on dataset 'mnist-t10k'; the "
        "data is dataset 'letters'",
    ):
        load_evaluator("models:/mnist_t10k_mlp/1", prepared, letters, GANTrainConfig())


@pytest.mark.parametrize(
    ("dataset", "size"), [("idx", 28), ("digits", 8)], ids=["mnist-like", "digits-framed"]
)
def test_the_same_images_give_the_same_predictions_from_an_array_and_from_files(
    tracking, tmp_path, dataset, size
):
    """predict framed every image file as a digit: 1,000 MNIST images scored 0.921 as a .npy
    array and 0.859 as 28x28 PNGs, the PNG path changing 990 of them by 14.8 grey levels."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from neuroflow.jobs.predict import PREDICTIONS, predict
    from neuroflow.settings import PredictConfig

    where = {"data_dir": str(write_idx_folder(tmp_path / "idx"))} if dataset == "idx" else {}
    data = prepare(dataset, **where)
    registered(trained_on(data, TrainConfig(epochs=2, device="cpu")))
    images, _ = synthetic_digits(40, size=size, seed=11)
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "pictures").mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "pictures" / f"{index:03d}.png")

    def classes(source: Path):
        with mlflow.start_run() as run:
            predict(PredictConfig(model=f"models:/{dataset}_mlp/1", data=str(source)))
        table = pd.read_parquet(
            mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/{PREDICTIONS}")
        )
        return table["class"].tolist()

    assert classes(tmp_path / "images.npy") == classes(tmp_path / "pictures")


def test_a_rerun_that_ties_keeps_the_champion(prepared):
    """'version 2 promoted: test_accuracy 0.8914 beats 0.8914 by 0.0000': a rerun of a
    configuration, scoring the same, moved `champion`."""
    config = TrainConfig(epochs=2, device="cpu")
    first, again = trained_on(prepared, config), trained_on(prepared, config)  # bit for bit
    assert registered(first) == "1" and promoted("idx_mlp", "1").decision.promote
    assert registered(again) == "2"
    outcome = promoted("idx_mlp", "2")
    assert outcome.candidate_score == outcome.champion_score
    assert not outcome.decision.promote and "a tie keeps the champion" in outcome.decision.reason
    assert str(MlflowClient().get_model_version_by_alias("idx_mlp", "champion").version) == "1"
