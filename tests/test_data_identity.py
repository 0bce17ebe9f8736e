"""Data identity, from preprocess to predict: each test replays a way a step was once silently
wrong about which data it held (the step cache, register, tune, promote, model names, predict,
resume and ties), and asserts the right outcome."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient

from helpers import step_in_process, synthetic_digits, write_idx_folder
from neuroflow.data.idx import write_idx
from neuroflow.errors import NeuroflowError
from neuroflow.jobs.preprocess import preprocess
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.jobs.tune import tune
from neuroflow.settings import MLPConfig, PipelineConfig, PrepareConfig, TrainConfig, TuneConfig

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
