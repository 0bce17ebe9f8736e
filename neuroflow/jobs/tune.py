"""The job of tune: an Optuna search over one classifier family's settings. Every trial is a
run nested under the tune run; the best trial's network becomes the tune run's model, so
register takes a tune run as it takes a training run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import mlflow
import optuna
import torch
from optuna.trial import TrialState

from neuroflow.data.prepared import open_for
from neuroflow.errors import NeuroflowError
from neuroflow.jobs.preprocess import preprocess_nested
from neuroflow.models.build import build_classifier, for_data
from neuroflow.settings import LoopConfig, TuneConfig
from neuroflow.tracking.evaluation import log_test_results
from neuroflow.tracking.lineage import log_splits, provenance_tags
from neuroflow.tracking.models import log_classifier
from neuroflow.tracking.runs import (
    FAMILY_TAG,
    STEP_TAG,
    download,
    experiment_id,
    log_params_once,
    params_of,
    resolve_data,
)
from neuroflow.tracking.studies import (
    STUDY_FILE,
    fail_killed_trials,
    fetch_study,
    keep_study,
    open_study,
)
from neuroflow.training import search
from neuroflow.training.batches import splits_of
from neuroflow.training.classifier import evaluate, fit
from neuroflow.training.device import resolve_device, seed_everything

WEIGHTS = "weights.pt"  # each finished trial's network, tensors only


def tune(config: TuneConfig) -> str:
    """In the active run: search `config.family`'s space for the lowest val_loss, each trial a
    nested run, and log the best trial's network as `model`. Returns its URI."""
    mlflow.set_tags({STEP_TAG: "tune", FAMILY_TAG: config.family, **provenance_tags()})
    log_params_once(params_of(config))
    space = search.load_space(config.family, config.space)
    ref = resolve_data(config.data, experiment_id()) or preprocess_nested()
    prepared = open_for(ref.uri, LoopConfig())  # whole, or a shard at a time when large
    with tempfile.TemporaryDirectory() as tmp:
        name = config.study or default_study(config.family, prepared.digest)
        mlflow.set_tag("study", name)
        kept = None if config.storage else Path(tmp) / STUDY_FILE
        copied = kept is not None and fetch_study(name, kept)
        url = config.storage or f"sqlite:///{kept}"
        study = open_study(name, url, search.sampler(config), search.pruner(config), config.storage)
        claim_for_data(study, prepared.digest)
        fail_killed_trials(study, copied)
        mlflow.log_params({"data_uri": ref.uri, "data_run_id": ref.run_id})
        mlflow.log_param("data_digest", prepared.digest)
        test_dataset = log_splits(prepared, ref.uri)["test"]
        device = resolve_device("auto")
        splits = splits_of(prepared, device, LoopConfig().shuffle_mb)
        parent = mlflow.active_run().info.run_id
        share_cores(config.workers)
        others = [
            start_worker(config, parent, ref.uri, url, name, i) for i in range(1, config.workers)
        ]
        keep = (lambda *_: keep_study(kept, parent)) if kept else None
        trial = Trial(config, space, prepared, splits, device, parent, on_start=keep)
        search_study(study, trial, config, after_each=keep)
        failed = [worker.wait() for worker in others]
        if any(failed):
            count = sum(map(bool, failed))
            raise NeuroflowError(f"{count} of the tune's workers failed (their errors are above)")
        if keep:
            keep()
    return log_best(study, config, space, prepared, (splits["test"], test_dataset), device)


def search_study(study, trial, config: TuneConfig, after_each=None) -> None:
    """Run trials until the study holds config.trials (every worker counts toward them)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    enough = optuna.study.MaxTrialsCallback(config.trials, states=states)
    if len(study.get_trials(deepcopy=False, states=states)) >= config.trials:
        return
    try:
        study.optimize(
            trial,
            timeout=config.timeout or None,
            callbacks=[enough, *([after_each] if after_each else [])],
            catch=(),
        )
    except ValueError as error:
        if "distribution" not in str(error):
            raise
        raise NeuroflowError(
            f"study {study.study_name!r} was searched over another space ({error}); expected "
            "the same space, or another study name"
        ) from None


def start_worker(
    config: TuneConfig, parent: str, data_uri: str, storage: str, study: str, index: int
):
    """Worker `index`: another process drawing trials from the same study, logging them
    under the tune run `parent` (python -m neuroflow.jobs.tune, below)."""
    args = json.dumps(
        {
            "config": asdict(config),
            "parent": parent,
            "data": data_uri,
            "storage": storage,
            "study": study,
            "index": index,
        }
    )
    root = str(Path(__file__).resolve().parents[2])  # where neuroflow is, wherever we run
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen([sys.executable, "-m", "neuroflow.jobs.tune", args], env=env)


def worker(args: dict) -> None:
    """One worker's trials, its sampler seeded apart so workers do not draw the same ones."""
    config = TuneConfig(**args["config"])
    share_cores(config.workers)
    config = replace(config, seed=config.seed + args["index"], workers=1)
    space = search.load_space(config.family, config.space)
    prepared = open_for(args["data"], LoopConfig())
    device = resolve_device("auto")
    splits = splits_of(prepared, device, LoopConfig().shuffle_mb, ("train", "val"))
    study = open_study(
        args["study"], args["storage"], search.sampler(config), search.pruner(config)
    )
    search_study(study, Trial(config, space, prepared, splits, device, args["parent"]), config)


def default_study(family: str, data_digest: str) -> str:
    """tune-<family>-<data digest>-<code digest>: a tune on other data, or by other code,
    searches afresh instead of going on with a study whose trials trained on something else."""
    from neuroflow.tracking.lineage import PROJECT_ROOT, code_digest

    return f"tune-{family}-{data_digest[:12]}-{code_digest(PROJECT_ROOT)[:12]}"


DATA_ATTR = "data_digest"  # the digest of the data a study's trials trained on


def claim_for_data(study, data_digest: str) -> None:
    """Mark a new study with the data its trials train on; refuse to go on with a study whose
    trials trained on other data, as its best trial would be a network of that data logged
    with this data's lineage."""
    held = study.user_attrs.get(DATA_ATTR)
    if held is None:
        study.set_user_attr(DATA_ATTR, data_digest)
    elif held != data_digest:
        raise NeuroflowError(
            f"study {study.study_name!r} holds trials trained on data digest {held}; this tune's "
            f"data has digest {data_digest}: expected the same data, or another study name"
        )


def share_cores(workers: int) -> None:
    """Each of `workers` processes takes its share of the cores: more threads than cores only
    makes them wait on each other."""
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


class Trial:
    """The objective: one trial trained in a nested run, its val_loss reported every epoch."""

    def __init__(
        self, config: TuneConfig, space: dict, prepared, splits, device, parent, on_start=None
    ):
        self.config, self.space, self.prepared = config, space, prepared
        self.splits, self.device, self.parent = splits, device, parent
        self.on_start = on_start  # called once a trial has its run

    def __call__(self, trial: optuna.Trial) -> float:
        family, prepared = self.config.family, self.prepared
        training, model_config = search.suggest(trial, self.space, family, self.config)
        pruned = False
        name = f"trial {trial.number}"
        with mlflow.start_run(nested=True, parent_run_id=self.parent, run_name=name) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            if self.on_start:
                self.on_start()
            mlflow.set_tags({"trial": str(trial.number), "pruned": "false"})
            mlflow.log_params({k: str(v) for k, v in trial.params.items()})
            seed_everything(training.seed)
            model = build_classifier(family, model_config, **for_data(prepared)).to(self.device)

            def on_epoch(metrics: dict[str, float], epoch: int) -> None:
                mlflow.log_metrics(metrics, step=epoch)
                trial.report(metrics["val_loss"], epoch)
                mlflow.log_metric("epochs_trained", epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"val_loss {metrics['val_loss']:.4f} at {epoch}")

            try:
                result = fit(model, self.splits["train"], self.splits["val"], training, on_epoch)
            except optuna.TrialPruned:
                pruned = True
                mlflow.set_tag("pruned", "true")
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    torch.save(model.state_dict(), Path(tmp) / WEIGHTS)
                    mlflow.log_artifact(str(Path(tmp) / WEIGHTS))
        if pruned:
            raise optuna.TrialPruned()
        return min(epoch["val_loss"] for epoch in result.history)


def log_best(study, config: TuneConfig, space: dict, prepared, test, device) -> str:
    """Log the search's outcome on the tune run and the best trial's network as `model`,
    scored on `test`: the test split (neuroflow.training.batches.Split) and its MLflow
    dataset."""
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise NeuroflowError(
            f"study {study.study_name!r} has no finished trial (all {len(study.trials)} were "
            "pruned or failed); expected at least one: raise trials or set pruner=none"
        )
    best = study.best_trial
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in study.trials:
        counts[trial.state.name.lower()] += 1
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    mlflow.log_metrics({"best_val_loss": best.value, "trial_epochs": epochs})
    mlflow.log_metrics({f"trials_{state}": n for state, n in counts.items() if n})
    mlflow.log_params({f"best_{k}": str(v) for k, v in best.params.items()})
    mlflow.set_tag("best_trial_run", best.user_attrs["mlflow_run_id"])
    log_study_plots(study)
    _, model_config = search.suggest(
        optuna.trial.FixedTrial(best.params), space, config.family, config
    )
    model = build_classifier(config.family, model_config, **for_data(prepared))
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"runs:/{best.user_attrs['mlflow_run_id']}/{WEIGHTS}"
        model.load_state_dict(torch.load(download(uri, tmp), weights_only=True))
    model = model.to(device)
    split, test_dataset = test
    result = evaluate(model, split.images, split.labels)
    info = log_classifier(model, prepared.images["test"][:4])
    log_test_results(info, prepared, result, test_dataset)
    mlflow.set_tag("model_uri", info.model_uri)
    print(
        f"tune: best of {len(study.trials)} trials is trial {best.number}, val_loss "
        f"{best.value:.4f}, test_accuracy {result.accuracy:.4f}: {best.params}"
    )
    return info.model_uri


def log_study_plots(study) -> None:
    """Optuna's matplotlib plots of the search, those it can draw for this study."""
    from matplotlib import pyplot
    from optuna.visualization import matplotlib as drawn

    figures = {
        "optimization_history": drawn.plot_optimization_history,
        "param_importances": drawn.plot_param_importances,
        "parallel_coordinate": drawn.plot_parallel_coordinate,
    }
    for name, draw in figures.items():
        try:
            with warnings.catch_warnings():  # two of them are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw(study)
        except (ValueError, RuntimeError):  # e.g. importances need two finished trials
            continue
        axes = axes.flatten()[0] if hasattr(axes, "flatten") else axes
        figure = axes.get_figure()
        mlflow.log_figure(figure, f"plots/{name}.png")
        pyplot.close(figure)  # Optuna draws with pyplot, which keeps every figure open


if __name__ == "__main__":  # a worker, started by start_worker
    worker(json.loads(sys.argv[1]))
