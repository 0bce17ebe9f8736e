"""tune in-process on tiny data: trials as nested runs, the best as the model, a study that
goes on where it stopped, and the same trials for the same seed."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient

from benchmarks.tune import kill_when, trial_training
from helpers import Store, mlflow_run_command, mlflow_run_env
from neuroflow.errors import ConfigError
from neuroflow.jobs.register import register
from neuroflow.jobs.tune import tune
from neuroflow.settings import TuneConfig
from neuroflow.tracking.studies import with_driver
from neuroflow.training.search import load_space


@pytest.fixture
def small_space(tmp_path):
    """A narrow MLP space, so a trial takes a fraction of a second."""
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"hidden": ["32", "64"], "batch_size": [32, 64]}))
    return str(path)


def run_tune(data: str, space: str, **overrides):
    chosen = {"family": "mlp", "data": data, "space": space, "epochs": 2, "trials": 3}
    config = TuneConfig(**{**chosen, **overrides})
    with mlflow.start_run() as run:
        tune(config)
    return mlflow.get_run(run.info.run_id)


def trials_of(run_id: str) -> list:
    where = f"tags.mlflow.parentRunId = '{run_id}'"
    runs = mlflow.search_runs(filter_string=where, output_format="list")
    return sorted(runs, key=lambda r: int(r.data.tags["trial"]))


def test_each_trial_is_a_nested_run_and_the_best_is_the_model_register_takes(prepared, small_space):
    run = run_tune(prepared.run_id, small_space, pruner="none")
    trials = trials_of(run.info.run_id)
    assert [t.data.tags["trial"] for t in trials] == ["0", "1", "2"]
    client = MlflowClient()
    for trial in trials:
        assert trial.data.tags["pruned"] == "false"
        assert {"hidden", "batch_size", "lr"} <= trial.data.params.keys()
        steps = [m.step for m in client.get_metric_history(trial.info.run_id, "val_loss")]
        assert steps == [1, 2]
    best = min(
        min(m.value for m in client.get_metric_history(t.info.run_id, "val_loss")) for t in trials
    )
    assert run.data.metrics["best_val_loss"] == pytest.approx(best)
    assert run.data.tags["family"] == "mlp" and run.data.tags["step"] == "tune"
    assert 0 <= run.data.metrics["test_accuracy"] <= 1
    assert run.data.metrics["trial_epochs"] == 6
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/optimization_history.png" in plots
    with mlflow.start_run():
        version = register(run.info.run_id, "", "", "")
    assert version.run_id == run.info.run_id and version.aliases == ["challenger"]


def test_the_same_seed_gives_the_same_trials(prepared, small_space):
    first = run_tune(prepared.run_id, small_space, study="a", seed=3)
    again = run_tune(prepared.run_id, small_space, study="b", seed=3)
    other = run_tune(prepared.run_id, small_space, study="c", seed=4)

    def drawn(run):
        return [t.data.params for t in trials_of(run.info.run_id)]

    assert drawn(first) == drawn(again)
    assert drawn(first) != drawn(other)


def test_a_tune_run_again_with_the_same_study_keeps_its_finished_trials(prepared, small_space):
    first = run_tune(prepared.run_id, small_space, study="kept", trials=2)
    more = run_tune(prepared.run_id, small_space, study="kept", trials=3)
    assert more.data.tags["resumed_study_from"] == first.info.run_id
    assert [t.data.tags["trial"] for t in trials_of(more.info.run_id)] == ["2"]
    assert more.data.metrics["trials_complete"] + more.data.metrics.get("trials_pruned", 0) == 3


def test_a_pruned_trial_stops_early_and_says_so(prepared, small_space):
    run = run_tune(prepared.run_id, small_space, trials=8, pruner="median", epochs=3)
    trials = trials_of(run.info.run_id)
    pruned = [t for t in trials if t.data.tags["pruned"] == "true"]
    assert run.data.metrics.get("trials_pruned", 0) == len(pruned)
    for trial in pruned:
        assert trial.data.metrics["epochs_trained"] < 3
    assert run.data.metrics["trial_epochs"] == sum(t.data.metrics["epochs_trained"] for t in trials)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lr": [0.1, 0.01, "log"]}, "low 0.1 > high 0.01"),
        ({"lr": [-1, 0.01, "log"]}, "a log range from -1; expected low > 0"),
        ({"depth": [1, 3, "linear"]}, "'depth' is not a setting of train_cnn"),
        ({"cell": ["lstm"]}, "'cell' is not a setting of train_cnn"),  # the RNN's
        ({"channels": [1, 2, "linear"]}, "a range, but channels is not a number"),
        ({"lr": []}, "expected [low, high, 'log' or 'linear'] or a list of choices"),
    ],
)
def test_a_bad_space_is_refused_with_its_setting_named(tmp_path, space, message):
    path = tmp_path / "space.yaml"
    path.write_text(json.dumps(space))
    with pytest.raises(ConfigError) as error:
        load_space("cnn", str(path))
    assert message in str(error.value)
    assert error.value.fields == (next(iter(space)),)


@pytest.mark.slow  # a second worker process, importing torch, MLflow and Optuna afresh
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_workers_share_one_study_and_run_every_trial_once(
    prepared, small_space, tmp_path, request, database
):
    if database == "sqlite":
        storage, password = f"sqlite:///{tmp_path / 'shared.db'}", None
    else:  # a new database, named as users write it (the driver left to tune)
        storage = request.getfixturevalue("postgres")("tune").replace("+psycopg2", "")
        password = request.getfixturevalue("postgres_role").password
    run = run_tune(prepared.run_id, small_space, trials=4, workers=2, storage=storage)
    import optuna

    name = run.data.tags["study"]
    assert name.startswith(f"tune-mlp-{prepared.digest[:12]}-")  # family, data, code
    study = optuna.load_study(study_name=name, storage=with_driver(storage))
    numbers = sorted(t.number for t in study.trials)
    assert len(numbers) >= 4 and numbers == list(range(len(numbers)))  # none lost
    assert all(t.state.is_finished() for t in study.trials)
    trials = trials_of(run.info.run_id)  # both workers' trials, under the one tune run
    assert sorted(int(t.data.tags["trial"]) for t in trials) == numbers  # each run once
    assert run.data.metrics["trials_complete"] + run.data.metrics.get("trials_pruned", 0) == len(
        numbers
    )
    for logged in (run, *trials):  # the URL's password is masked wherever it was logged
        assert password is None or password not in json.dumps(
            [logged.data.params, logged.data.tags]
        )
    print(f"{len(numbers)} trials by 2 workers in one {database} study, each run once: {numbers}")


def test_main_with_tune_trials_tunes_each_classifier_and_trains_the_dcgan(tracking, monkeypatch):
    from neuroflow.jobs import main as main_job
    from neuroflow.settings import PipelineConfig

    asked = []
    monkeypatch.setattr(
        main_job.Pipeline,
        "step",
        lambda self, step, params, still_valid=None: asked.append((step, params)),
    )
    data = "d" * 32
    with mlflow.start_run():
        tuning = main_job.Pipeline(PipelineConfig(tune_trials=5, epochs=2))
        tuning.train("cnn", data)
        tuning.train("dcgan", data, evaluator="models:/digits_cnn/1")
        main_job.Pipeline(PipelineConfig()).train("mlp", data)
    (tuned, params), (dcgan, _), (mlp, _) = asked
    assert tuned == "tune" and (params["family"], params["trials"], params["epochs"]) == (
        "cnn",
        5,
        2,
    )
    assert "study" not in params  # tune names it by family, data digest and code digest
    assert (dcgan, mlp) == ("train_dcgan", "train_mlp")


def killed_mid_trial(store: Store, params: dict, trial: int) -> str:
    """`mlflow run . -e tune` with `params`, its process group killed with SIGKILL once trial
    `trial` has trained an epoch. Returns the killed tune run's id."""
    mlflow.set_tracking_uri(store.uri)
    try:
        command, env = mlflow_run_command("tune", **params), mlflow_run_env(store.uri)
        kill_when(command, store.folder, env, trial_training(trial))
    finally:
        mlflow.set_tracking_uri(None)
    (run,) = store.runs(f"tags.trial = '{trial}'")
    return run.data.tags["mlflow.parentRunId"]


@pytest.mark.slow
@pytest.mark.parametrize("shared", [False, True], ids=["kept-with-the-run", "shared-storage"])
def test_a_killed_tune_run_again_keeps_its_finished_trials_and_reruns_the_lost_one(
    tmp_path, shared
):
    store = Store(tmp_path)
    data = store.step("preprocess", source="digits")
    assert data.returncode == 0, data.stderr
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"hidden": ["32", "64", "128"], "lr": [1e-3, 1e-2, "log"]}))
    params = {"family": "mlp", "data": data.run_id, "space": space, "trials": 4, "epochs": 25}
    params |= {"pruner": "none", "study": "killed"}
    if shared:
        params["storage"] = f"sqlite:///{tmp_path / 'study.db'}"
    killed = killed_mid_trial(store, params, trial=2)

    resumed = store.run("tune", **params)
    assert resumed.returncode == 0, resumed.stderr
    run = store.get(resumed.run_id)
    if not shared:  # the study came from the killed run, now marked so
        assert run.data.tags["resumed_study_from"] == killed
        assert store.get(killed).info.status == "KILLED"
    assert run.data.metrics["trials_complete"] == 4
    assert run.data.metrics["trials_fail"] == 1

    trials = sorted(store.runs("tags.trial != ''"), key=lambda r: int(r.data.tags["trial"]))
    parents = [trial.data.tags["mlflow.parentRunId"] for trial in trials]
    assert parents == [killed, killed, killed, resumed.run_id, resumed.run_id]
    statuses = [trial.info.status for trial in trials]
    assert statuses == ["FINISHED", "FINISHED", "KILLED", "FINISHED", "FINISHED"]
    assert trials[3].data.params == trials[2].data.params  # the lost trial, run again
