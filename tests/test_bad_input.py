"""Bad input to every entry point, on one shared store in which a model has been trained,
registered and promoted. Each row must end with one line naming the bad value and what was
expected, no traceback, its run FAILED, and nothing else changed: the registry compared byte for
byte, and every run that was there before as it was.

Every row runs in this process as `mlflow run` runs a step (helpers.step_in_process); the rows
of CLI_ROWS also run through the real `mlflow run` CLI, which must print the same line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from helpers import MlflowRun, Store, registry_bytes, synthetic_digits

MODEL = "digits_mlp"  # what register names the MLP trained on the default digits
NO_RUN = "0" * 32  # a well-formed run id that no store holds


def bad_folders(root: Path) -> dict[str, Path]:
    """IDX folders that are each wrong in one way, a plain file, and a path that is not there."""
    from PIL import Image

    from neuroflow.data.idx import write_idx

    images, labels = synthetic_digits(50)
    names = ("empty", "truncated", "mismatched", "not_idx", "few")
    folders = {name: root / name for name in names}
    for folder in folders.values():
        folder.mkdir()
    one_class = root / "one_class" / "cat"  # pictures by class, of one class only
    one_class.mkdir(parents=True)
    for index, image in enumerate(images[:5]):
        Image.fromarray(image).save(one_class / f"{index}.png")
    folders["one_class"] = one_class.parent
    mixed = root / "mixed"  # grey pictures, and one in colour
    for index, image in enumerate(images[:6]):
        (mixed / str(index % 2)).mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image).convert("RGB" if index == 3 else "L")
        picture.save(mixed / str(index % 2) / f"{index}.png")
    folders["mixed"] = mixed
    import pyarrow as pa
    import pyarrow.parquet as pq

    unlabelled = root / "unlabelled.parquet"  # pictures without a label column
    pq.write_table(pa.table({"image": [image.tobytes() for image in images[:5]]}), unlabelled)
    folders["unlabelled"] = unlabelled
    truncated = folders["truncated"] / "train-images-idx3-ubyte"
    write_idx(truncated, images)
    write_idx(folders["truncated"] / "train-labels-idx1-ubyte", labels)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    write_idx(folders["mismatched"] / "train-images-idx3-ubyte.gz", images)
    write_idx(folders["mismatched"] / "train-labels-idx1-ubyte.gz", labels[:-1])
    (folders["not_idx"] / "train-images-idx3-ubyte").write_text("hello")
    write_idx(folders["not_idx"] / "train-labels-idx1-ubyte", labels)
    few_images, few_labels = synthetic_digits(10)  # one image of each class
    write_idx(folders["few"] / "train-images-idx3-ubyte", few_images)
    write_idx(folders["few"] / "train-labels-idx1-ubyte", few_labels)
    plain_file = root / "plain.txt"
    plain_file.write_text("a file, not a folder\n")
    spaces = {  # search spaces for tune, each wrong in its own way
        "space_unknown": '{"lr": [0.001, 0.01, "log"], "momentum": [0.8, 0.99, "linear"]}',
        "space_reversed": '{"lr": [0.01, 0.001, "log"]}',
        "space_log_zero": '{"weight_decay": [0, 0.01, "log"]}',
        "space_not_a_map": '["lr"]',
    }
    for name, text in spaces.items():
        (root / f"{name}.json").write_text(text)
    spaces = {name: root / f"{name}.json" for name in spaces}
    return {**folders, **spaces, "plain_file": plain_file, "missing": root / "missing"}


def broken_models(store: Store, data_run: str) -> dict[str, str]:
    """Runs that look like finished train_mlp runs, each with a model that cannot be used: its
    weights truncated, its weights with one byte changed, or a model another project logged.
    And `broken_mlp`, a registered version whose weights were truncated after it was
    registered. Returns the runs' ids by name."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from neuroflow.families import MLPConfig
    from neuroflow.models.build import build_classifier
    from neuroflow.tracking.models import log_classifier

    def damage(model_id: str, how: str) -> None:
        folder = store.client.get_logged_model(model_id).artifact_location.removeprefix("file://")
        weights = Path(folder) / "artifacts" / "network" / "weights.pt"
        data = bytearray(weights.read_bytes())
        if how == "truncated":
            del data[len(data) // 2 :]
        else:
            data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))

    mlflow.set_tracking_uri(store.uri)
    runs = {}
    try:
        for name in ("truncated", "corrupt", "foreign", "registered"):
            with mlflow.start_run(experiment_id="0") as run:
                mlflow.set_tags({"step": "train_mlp", "family": "mlp"})
                mlflow.log_params({"data_run_id": data_run, "data_digest": "0" * 16})
                mlflow.log_metric("test_accuracy", 0.5)
                if name == "foreign":
                    images, labels = synthetic_digits(20)
                    flat = images.reshape(len(images), -1)
                    info = mlflow.sklearn.log_model(  # pins given: inferring them takes 8 s
                        LogisticRegression().fit(flat, labels),
                        name="model",
                        pip_requirements=["scikit-learn"],
                    )
                else:
                    network = build_classifier(
                        "mlp", MLPConfig(hidden=(8,)), (28, 28), 33.0, 78.0, list("0123456789")
                    )
                    info = log_classifier(network, np.zeros((2, 28, 28), np.float32))
                mlflow.set_tag("model_uri", info.model_uri)
            runs[f"{name}_run"] = run.info.run_id
            if name in ("truncated", "corrupt"):
                damage(info.model_id, name)
    finally:
        mlflow.set_tracking_uri(None)
    succeeded(store.step("register", run_id=runs["registered_run"], model_name="broken_mlp"))
    damage(info.model_id, "truncated")
    return runs


def succeeded(result: MlflowRun) -> str:
    assert result.returncode == 0, result.stderr
    return result.run_id


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> SimpleNamespace:
    """A store with a prepared dataset, an MLP trained on it, registered and promoted (so the
    registry holds a version with tags, a description and both aliases), a training run that
    failed before it logged a model, and the bad folders. `values` fill the rows' {names}."""
    store = Store(tmp_path_factory.mktemp("store"))
    data_run = succeeded(store.step("preprocess"))
    mlp_run = succeeded(store.step("train_mlp", data=data_run, epochs=1, hidden="32"))
    succeeded(store.step("register", run_id=mlp_run))
    succeeded(store.step("promote", model_name=MODEL))
    failed = store.step("train_mlp", data=mlp_run, epochs=2)  # data is not a preprocess run
    assert failed.returncode != 0 and store.get(failed.run_id).info.status == "FAILED"

    version = store.client.get_model_version_by_alias(MODEL, "champion")
    assert sorted(version.aliases) == ["challenger", "champion"]
    assert version.tags["promotion"] == "promoted" and version.description
    folders = bad_folders(tmp_path_factory.mktemp("folders"))
    broken = broken_models(store, data_run)
    values = {
        **broken,
        "data_run": data_run,
        "mlp_run": mlp_run,
        "failed_run": failed.run_id,
        "no_run": NO_RUN,
        **{name: str(path) for name, path in folders.items()},
    }
    return SimpleNamespace(store=store, values=values)


def row(entry_point: str, params: dict[str, str], *expected: str):
    """One bad input: `expected` are substrings of the error line (the bad value and what was
    expected), with {names} from the `shared` fixture's values."""
    name = ",".join(f"{key}={value}" for key, value in params.items()) or "no options"
    return pytest.param(entry_point, params, expected, id=f"{entry_point}:{name}")


ROWS = [
    # preprocess: options, then paths and IDX files
    row("preprocess", {"dataset": "cifar"}, "'cifar' is not one of 'digits'"),
    row("preprocess", {"val_fraction": "1.5"}, "1.5 is not in the range 0<x<1"),
    row("preprocess", {"test_fraction": "0"}, "0.0 is not in the range 0<x<1"),
    row(
        "preprocess",
        {"val_fraction": "0.5", "test_fraction": "0.5"},
        "val_fraction + test_fraction = 1; expected less than 1",
    ),
    row(
        "preprocess",
        {"dataset": "idx", "data_dir": "{missing}"},
        "'{missing}' is not a folder",
        "dataset idx needs a folder of IDX files",
    ),
    row(
        "preprocess",
        {"dataset": "idx", "data_dir": "{plain_file}"},
        "'{plain_file}' is not a folder",
        "dataset idx needs a folder of IDX files",
    ),
    row(
        "preprocess",
        {"dataset": "folder", "data_dir": "{plain_file}"},
        "'{plain_file}' is not a folder; dataset folder needs a folder of pictures by class",
    ),
    row(
        "preprocess",
        {"dataset": "folder", "data_dir": "{one_class}"},
        "has only class 'cat'; expected a folder per class, two or more",
    ),
    row(
        "preprocess",
        {"dataset": "folder", "data_dir": "{mixed}", "channels": "1"},
        "channels=1, but {mixed}/1/3.png is in colour and {mixed}/0/0.png is grey; expected "
        "pictures all grey or all in colour when channels is fixed, or channels=auto",
    ),
    row("preprocess", {"channels": "4"}, "'4' is not one of 'auto', '1', '3'"),
    row(
        "preprocess",
        {"dataset": "table", "data_dir": "{plain_file}"},
        "is not a table's name; dataset table needs <catalog>.<schema>.<table>",
    ),
    row(
        "preprocess",
        {"dataset": "parquet", "data_dir": "{plain_file}"},
        "'{plain_file}' is not a .parquet file or a folder; dataset parquet needs a Parquet file",
    ),
    row(
        "preprocess",
        {"dataset": "parquet", "data_dir": "{unlabelled}"},
        "unlabelled.parquet has no column 'label' (its columns: image)",
    ),
    row(
        "preprocess",
        {"dataset": "delta", "data_dir": "{empty}"},
        "empty has no _delta_log; expected the folder of a Delta table",
    ),
    row(
        "preprocess",
        {"dataset": "idx", "data_dir": "{empty}"},
        "empty holds no IDX pairs; expected files like train-images-idx3-ubyte",
    ),
    row(
        "preprocess",
        {"dataset": "idx", "data_dir": "{truncated}"},
        "train-images-idx3-ubyte: header declares 50x28x28 (39200 bytes of data)",
        "holds 39100 bytes; it is truncated or corrupt",
    ),
    row(
        "preprocess",
        {"dataset": "idx", "data_dir": "{mismatched}"},
        "holds 50 images but train-labels-idx1-ubyte.gz holds 49 labels; expected the same count",
    ),
    row(
        "preprocess",
        {"dataset": "idx", "data_dir": "{not_idx}"},
        "not_idx/train-images-idx3-ubyte: not an IDX file (magic bytes 68656c6c)",
    ),
    row(
        "preprocess",
        {"dataset": "idx", "data_dir": "{few}", "val_fraction": "0.6", "test_fraction": "0.3"},
        "the train split is empty (10 images, fractions",
        "expected fractions that leave every split at least one image",
    ),
    # the classifiers: options, the data they read, the run they resume
    row("train_mlp", {"epochs": "abc"}, "'abc' is not a valid integer"),
    row("train_mlp", {"dropout": "1"}, "1.0 is not in the range 0<=x<1"),
    row("train_mlp", {"nproc": "0"}, "0 is not in the range 1<=x<=64"),
    row(
        "train_mlp",
        {"data": "{mlp_run}"},
        "run {mlp_run} is a train_mlp run; expected a preprocess run for data",
    ),
    row("train_mlp", {"data": "{no_run}"}, "run {no_run} does not exist", "expected a preprocess"),
    row(
        "train_mlp",
        {"resume_from": "{mlp_run}"},
        "resume_from {mlp_run} is FINISHED; expected a FAILED or KILLED run",
    ),
    row(
        "train_mlp",
        {"resume_from": "{no_run}"},
        "{no_run} does not exist",
        "expected a FAILED or KILLED train_mlp run",
    ),
    row("train_cnn", {"lr": "abc"}, "'abc' is not a valid float"),
    row("train_cnn", {"batch_size": "2.5"}, "'2.5' is not a valid integer"),
    row("train_cnn", {"epochs": "0"}, "0 is not in the range x>=1"),
    row("train_cnn", {"optimizer": "rmsprop"}, "'rmsprop' is not one of 'adamw', 'adam', 'sgd'"),
    row("train_cnn", {"device": "tpu"}, "'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    row(
        "train_cnn",
        {"resume_from": "{mlp_run}"},
        "resume_from {mlp_run} is a train_mlp run; expected a train_cnn run",
    ),
    row("train_rnn", {"cell": "transformer"}, "'transformer' is not one of 'lstm'"),
    row("train_rnn", {"bidirectional": "maybe"}, "'maybe' is not a valid boolean"),
    row("train_rnn", {"batch_size": "0"}, "0 is not in the range x>=1"),
    row(
        "train_rnn",
        {"resume_from": "{data_run}"},
        "resume_from {data_run} is a preprocess run; expected a train_rnn run",
    ),
    # train_dcgan
    row("train_dcgan", {"loss": "hinge"}, "'hinge' is not one of 'bce', 'wgan-gp'"),
    row("train_dcgan", {"latent_dim": "0"}, "0 is not in the range x>=1"),
    row(
        "train_dcgan",
        {"evaluator": "models:/nothing@champion"},
        "evaluator models:/nothing@champion cannot be loaded",
        "expected the URI of a logged classifier",
    ),
    row(
        "train_dcgan",
        {"resume_from": "{mlp_run}"},
        "resume_from {mlp_run} is a train_mlp run; expected a train_dcgan run",
    ),
    # register
    row("register", {"run_id": "{no_run}"}, "run {no_run} does not exist", "expected a"),
    row(
        "register",
        {"run_id": "{data_run}"},
        "run {data_run} is a preprocess run; expected a training run with a model",
    ),
    row(
        "register",
        {"run_id": "{failed_run}"},
        "run {failed_run} is a FAILED train_mlp run",
        "expected a FINISHED training run with a model",
    ),
    row("register", {"family": "cnn"}, "has no FINISHED cnn run with a model"),
    row(
        "register",
        {"run_id": "{truncated_run}"},
        "run {truncated_run}'s model models:/",
        "cannot be loaded: its file artifacts/network/weights.pt changed since it was logged",
        "expected a model logged by this project's training",
    ),
    row(
        "register",
        {"run_id": "{corrupt_run}"},
        "run {corrupt_run}'s model models:/",
        "cannot be loaded: its file artifacts/network/weights.pt changed since it was logged",
    ),
    row(
        "register",
        {"run_id": "{foreign_run}"},
        "run {foreign_run}'s model models:/",
        "nothing recorded the digests of its files when it was logged",
        "this project's training did not log it",
    ),
    row(
        "register",
        {"family": "dcgan", "metric": "test_accuracy"},
        "a dcgan is judged by fid, not 'test_accuracy'",
    ),
    # promote
    row("promote", {"model_name": "nothing"}, "registered model 'nothing' does not exist"),
    row("promote", {"model_name": MODEL, "candidate": "99"}, f"'{MODEL}' has no version '99'"),
    row(
        "promote",
        {"model_name": "broken_mlp"},
        "version models:/broken_mlp/1 cannot be loaded: its file artifacts/network/weights.pt "
        "changed since it was registered as version 1 of 'broken_mlp'",
    ),
    row(
        "promote",
        {"model_name": MODEL, "candidate": "staging"},
        f"'{MODEL}' has no alias 'staging'",
    ),
    row(
        "promote",
        {"model_name": MODEL, "metric": "fid"},
        "a mlp is judged by test_accuracy, not 'fid'",
    ),
    row("promote", {"model_name": MODEL, "metric": "auc"}, "'auc' is not one of"),
    row("promote", {"model_name": MODEL, "min_delta": "-1"}, "-1.0 is not in the range x>=0"),
    row("promote", {"model_name": MODEL, "dry_run": "maybe"}, "'maybe' is not a valid boolean"),
    # tune
    row("tune", {"family": "dcgan"}, "'dcgan' is not one of 'mlp', 'cnn', 'rnn'"),
    row("tune", {"sampler": "grid"}, "'grid' is not one of 'tpe', 'random'"),
    row("tune", {"pruner": "always"}, "'always' is not one of 'median', 'hyperband', 'none'"),
    row("tune", {"trials": "0"}, "0 is not in the range x>=1"),
    row("tune", {"space": "{space_unknown}"}, "'momentum' is not a setting of train_cnn"),
    row("tune", {"space": "{space_reversed}"}, "low 0.01 > high 0.001; expected low <= high"),
    row("tune", {"space": "{space_log_zero}"}, "a log range from 0; expected low > 0"),
    row("tune", {"space": "{space_not_a_map}"}, "expected a mapping of setting -> range"),
    row("tune", {"space": "{missing}"}, "{missing}: cannot be read"),
    row(
        "tune",
        {"storage": "sqlite:///{missing}/study.db"},
        "storage 'sqlite:///{missing}/study.db' cannot be opened",
    ),
    row(
        "tune",
        {"storage": "postgresql://neuroflow:hunter22@127.0.0.1:1/optuna"},
        "storage 'postgresql://neuroflow:***@127.0.0.1:1/optuna' cannot be opened",
        "Connection refused",
    ),
    # predict
    row("predict", {}, "give --data: the images to score"),
    row("predict", {"engine": "flink", "data": "{data_run}"}, "'flink' is not one of 'local'"),
    row("predict", {"batch_size": "0", "data": "{data_run}"}, "0 is not in the range x>=1"),
    row(
        "predict",
        {"model": f"models:/{MODEL}@champion", "data": "{missing}"},
        "data '{missing}' does not exist; expected a folder or archive of IDX files",
    ),
    row("predict", {"model": f"models:/{MODEL}/1", "data": "{empty}"}, "empty holds no IDX"),
    row(
        "predict",
        {"model": "models:/nothing@champion", "data": "{data_run}"},
        "model models:/nothing@champion cannot be loaded: Registered Model with name=nothing "
        "not found",
    ),
    row(
        "predict",
        {"model": f"models:/{MODEL}/1", "data": "{mlp_run}"},
        "run {mlp_run} is a train_mlp run; expected a preprocess run for data",
    ),
    # main
    row(
        "main",
        {"models": "mlp,svm"},
        "'mlp,svm' names unknown families ['svm']; expected a comma-separated list",
    ),
    row(
        "main",
        {"dataset": "idx", "data_dir": "{missing}"},
        "'{missing}' is not a folder",
        "dataset idx needs a folder of IDX files",
    ),
]


# Rows that also go through the real `mlflow run` CLI, one for each layer that can refuse:
# click's own types, an IDX file, a run lookup, a model load, the registry, and main's door.
CLI_ROWS = [
    "preprocess:dataset=idx,data_dir={truncated}",
    "train_cnn:lr=abc",
    "train_mlp:data={mlp_run}",
    "train_dcgan:evaluator=models:/nothing@champion",
    "register:run_id={failed_run}",
    "register:run_id={truncated_run}",
    f"promote:model_name={MODEL},candidate=99",
    "main:models=mlp,svm",
    "tune:space={space_reversed}",
    f"predict:model=models:/{MODEL}@champion,data={{missing}}",
]


@pytest.mark.parametrize(("entry_point", "params", "expected"), ROWS)
def test_bad_input_fails_its_run_with_one_line_and_changes_nothing(
    shared, entry_point, params, expected
):
    refused(shared, shared.store.step, entry_point, params, expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("entry_point", "params", "expected"), [r for r in ROWS if r.id in CLI_ROWS]
)
def test_bad_input_through_mlflow_run_gets_the_line_the_step_gives(
    shared, entry_point, params, expected
):
    line = refused(shared, shared.store.run, entry_point, params, expected)
    assert line == refused(shared, shared.store.step, entry_point, params, expected)


def test_every_cli_row_is_a_row():
    assert set(CLI_ROWS) <= {r.id for r in ROWS}


def refused(shared, run, entry_point: str, params: dict, expected: tuple[str, ...]) -> str:
    """Run one bad input with `run` (the CLI or in process) and check everything a bad input
    must leave behind; returns its error line."""
    store, values = shared.store, shared.values
    params = {key: value.format(**values) for key, value in params.items()}
    registry_before, runs_before = registry_bytes(store.client), run_statuses(store.client)

    result = run(entry_point, **params)

    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.error_lines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{entry_point}: error: "), lines[0]
    for text in expected:
        assert text.format(**values) in lines[0]
    assert result.run_id is not None, result.stderr
    assert store.get(result.run_id).info.status == "FAILED"
    runs_after = run_statuses(store.client)
    assert set(runs_after) - set(runs_before) == {result.run_id}  # no nested runs either
    assert {run_id: runs_after[run_id] for run_id in runs_before} == runs_before
    assert registry_bytes(store.client) == registry_before
    return lines[0]


def test_a_bad_option_is_refused_before_any_data_is_prepared(tmp_path):
    """On an empty store train_cnn prepares its data in a nested preprocess run; lr=abc must be
    refused before that, and before the run logs anything."""
    store = Store(tmp_path)
    result = store.step("train_cnn", lr="abc")
    assert result.returncode != 0
    (run,) = store.runs()
    assert run.info.run_id == result.run_id and run.info.status == "FAILED"
    assert "step" not in run.data.tags  # set by the job, which never started
    assert "data_run_id" not in run.data.params
    assert store.client.list_artifacts(result.run_id) == []


def run_statuses(client: MlflowClient) -> dict[str, str]:
    """run id -> status, for every run of every experiment, deleted ones included."""
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = client.search_runs(
        [experiment.experiment_id for experiment in experiments],
        run_view_type=ViewType.ALL,
        max_results=50000,
    )
    return {run.info.run_id: run.info.status for run in runs}
