"""One measured workload per process, so each has its own peak RSS and a cold start.

    python -m benchmarks.workloads <name> --bench-dir DIR [--epochs N]

Prints one JSON object on the last line of stdout. `benchmarks` (the harness) runs these side by
side and tabulates them; run one alone to look at it more closely.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import click
import numpy as np

TARGET = 0.98  # the test accuracy time-to-accuracy is measured to
CHECK_EVERY = 100  # optimizer steps between checks of the test accuracy


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class MlflowClock:
    """Time spent inside MLflow's API: the public functions of mlflow, mlflow.pytorch and
    mlflow.artifacts, and MlflowClient's methods, wrapped so that nested calls count once."""

    def __init__(self):
        self.seconds = 0.0
        self.by_name: dict[str, float] = {}
        self.depth = 0

    def wrap(self, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            # Calls from other threads (checkpoint uploads) do not hold training up.
            if self.depth or threading.current_thread() is not threading.main_thread():
                return function(*args, **kwargs)
            self.depth += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                self.seconds += spent
                name = function.__name__
                self.by_name[name] = self.by_name.get(name, 0.0) + spent
                self.depth -= 1

        return timed

    def install(self) -> MlflowClock:
        import mlflow
        import mlflow.artifacts
        import mlflow.pytorch

        for module in (mlflow, mlflow.pytorch, mlflow.artifacts):
            for name in dir(module):
                value = getattr(module, name)
                if not name.startswith("_") and callable(value) and not isinstance(value, type):
                    setattr(module, name, self.wrap(value))
        for name, value in vars(mlflow.MlflowClient).items():
            if not name.startswith("_") and callable(value):
                setattr(mlflow.MlflowClient, name, self.wrap(value))
        return self


class Clock:
    """Training time, with the test split scored every CHECK_EVERY optimizer steps and at each
    epoch end off the clock, so time to the target is judged within 100 steps, not only at
    epoch ends. restart() (the model is built, the data ready) keeps the time before it as
    setup. With stop=True, reaching the target ends training (raises Reached)."""

    def __init__(self, score, images_per_epoch: int, stop: bool = False, logging=None):
        self.score, self.images_per_epoch, self.stop = score, images_per_epoch, stop
        self.logging = logging
        self.start = time.perf_counter()
        self.excluded = self.setup_s = 0.0
        self.epoch_logging_s = 0.0  # MLflow's per-epoch logging (metrics, checkpoint) so far
        self.steps = 0
        self.model = None  # what restart() was given, for counting_steps
        self.checks: list[dict] = []  # every CHECK_EVERY steps
        self.epochs: list[dict] = []

    def restart(self, model=None) -> None:
        """The model is built and the data ready: training starts now."""
        now = time.perf_counter()
        self.setup_s, self.start, self.model = now - self.start, now, model

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def check(self, model) -> float | None:
        if self.score is None:
            return None
        scoring = time.perf_counter()
        accuracy = self.score(model)
        model.train()
        self.excluded += time.perf_counter() - scoring
        return accuracy

    def step(self, model) -> None:
        self.steps += 1
        if self.steps % CHECK_EVERY == 0:
            elapsed = self.elapsed()
            point = {"step": self.steps, "elapsed_s": elapsed, "test_accuracy": self.check(model)}
            self.checks.append(point)
            self._maybe_stop(point)

    def epoch(self, model, epoch: int) -> None:
        elapsed = self.elapsed()
        if self.logging:
            spent = self.logging.by_name.get
            self.epoch_logging_s = spent("log_metrics", 0.0) + spent("log_artifact", 0.0)
        point = {"epoch": epoch, "step": self.steps, "elapsed_s": elapsed}
        point["test_accuracy"] = self.check(model)
        self.epochs.append(point)
        self._maybe_stop(point)

    def _maybe_stop(self, point: dict) -> None:
        if self.stop and (point["test_accuracy"] or 0) >= TARGET:
            raise Reached

    def summary(self) -> dict:
        return clock_summary(self.checks, self.epochs, self.images_per_epoch, self.excluded)


class Reached(Exception):
    """The target accuracy was reached and the run was asked to stop there."""


def clock_summary(checks, epochs, images_per_epoch: int, excluded: float) -> dict:
    """Time to the target accuracy at the first check or epoch end that reached it, and speed
    from the epochs after the first, which also pays for setup and warm-up."""
    points = sorted(checks + epochs, key=lambda point: point["elapsed_s"])
    first = next((p for p in points if (p["test_accuracy"] or 0) >= TARGET), None)
    times = [e["elapsed_s"] for e in epochs]
    epoch_times = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    steady = float(np.median(epoch_times[1:] or epoch_times)) if epoch_times else None
    return {
        "epochs": epochs,
        "checks": checks,
        "time_to_target_s": first["elapsed_s"] if first else None,
        "steps_to_target": first["step"] if first else None,
        "seconds_per_epoch": steady,
        "images_per_s": images_per_epoch / steady if steady else None,
        "scoring_excluded_s": excluded,
    }


@contextlib.contextmanager
def counting_steps(clock: Clock):
    """Call clock.step after every optimizer step of our loop, once clock.restart() has named
    the model: the loop asks one_cycle for each step's lr, after the step before."""
    from neuroflow.training import classifier

    one_cycle = classifier.one_cycle

    def counted(step: int, *args):
        if step and clock.model is not None:  # step: the steps taken so far
            clock.step(clock.model)
        return one_cycle(step, *args)

    classifier.one_cycle = counted
    try:
        yield
    finally:
        classifier.one_cycle = one_cycle


def reference_splits(bench: Path):
    data = np.load(bench / "reference.npz")
    return (data["train_images"], data["train_labels"]), (data["test_images"], data["test_labels"])


def our_scorer(test, device):
    from neuroflow.training.batches import to_device
    from neuroflow.training.classifier import evaluate

    images, labels = to_device(*test, device)
    return lambda model: evaluate(model, images, labels).accuracy


def run_reference(bench: Path, epochs: int, seed: int, stop: bool, ours: bool = False) -> dict:
    """The reference loop; with `ours`, training our CNN instead of its Net (an ablation)."""
    import torch

    from benchmarks import reference

    train, test = reference_splits(bench)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loader = reference.loaders(train, test, device)[1]
    clock = Clock(lambda m: reference.test_accuracy(m, device, loader), len(train[1]), stop)
    model = reference_input(our_cnn(bench)) if ours else None
    with contextlib.suppress(Reached):
        reference.train(
            train,
            test,
            device,
            epochs or reference.EPOCHS,
            clock.epoch,
            clock.step,
            model,
            seed=reference.SEED + seed,
        )
    final = clock.epochs[-1]["test_accuracy"] if clock.epochs else None
    return {**clock.summary(), "final_test_accuracy": final, "seed": seed}


def our_cnn(bench: Path):
    """Our CNN, built as train_cnn builds it for the bench's data."""
    from neuroflow.data.prepared import load_prepared
    from neuroflow.families import CNNConfig
    from neuroflow.models.build import build_classifier

    prepared = load_prepared(bench / "prepared")
    return build_classifier(
        "cnn", CNNConfig(), prepared.image_shape, prepared.mean, prepared.std, prepared.classes
    )


def reference_input(model):
    """Our classifier fed the reference's batches: normalised (B, 1, 28, 28) floats back to raw
    pixels, which our model scales itself; log-probabilities out, for its NLL loss."""
    import torch

    class ReferenceInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            pixels = (batch[:, 0] * 0.3081 + 0.1307) * 255
            return self.model.logits(pixels).log_softmax(dim=1)

    return ReferenceInput()


def run_reference_net_in_our_loop(bench: Path, epochs: int, seed: int) -> dict:
    """Ablation: the reference's Net trained by our loop (fit, our defaults, no MLflow)."""
    import torch

    from benchmarks import reference
    from neuroflow.data.prepared import load_prepared
    from neuroflow.models.classifier import ImageClassifier, Standardize
    from neuroflow.settings import TRAINING
    from neuroflow.training.batches import to_device
    from neuroflow.training.classifier import fit
    from neuroflow.training.device import resolve_device, seed_everything

    prepared = load_prepared(bench / "prepared")
    config = dataclasses.replace(TRAINING["cnn"], seed=seed, epochs=epochs or 10)
    device = resolve_device(config.device)
    _, test = reference_splits(bench)
    clock = Clock(our_scorer(test, device), len(prepared.labels["train"]), stop=True)
    seed_everything(seed)
    standardize = Standardize(prepared.image_shape, prepared.mean, prepared.std)
    model = ImageClassifier("reference", {}, reference.Net(), standardize, prepared.classes)
    model = model.to(device)
    splits = {
        s: to_device(prepared.images[s], prepared.labels[s], device) for s in ("train", "val")
    }
    clock.restart(model)
    with contextlib.suppress(Reached), counting_steps(clock):
        fit(model, splits["train"], splits["val"], config, lambda m, e: clock.epoch(model, e))
    return {**clock.summary(), "threads": torch.get_num_threads()}


def run_classifier(bench: Path, family: str, epochs: int, seed: int) -> dict:
    """train_<family> with its shipped defaults (the settings its step is built from), as the
    step calls it, logging to the bench's sqlite store."""
    import mlflow
    import torch

    from neuroflow.jobs.train_classifier import train_classifier
    from neuroflow.settings import MODELS, TRAINING
    from neuroflow.training.device import resolve_device

    meta = json.loads((bench / "bench.json").read_text())
    data = meta["data_run_id"]
    config = dataclasses.replace(TRAINING[family], seed=seed)
    if epochs:
        config = dataclasses.replace(config, epochs=epochs)
    model_config = MODELS[family]()
    _, test = reference_splits(bench)
    device = resolve_device(config.device)
    logging = MlflowClock().install()
    clock = Clock(our_scorer(test, device), meta["train_count"], logging=logging)

    def watch(model, epoch: int) -> None:
        clock.epoch(model, epoch) if epoch else clock.restart(model)

    start = time.perf_counter()  # the step's MLflow work includes opening its run
    with mlflow.start_run(run_name=f"bench {family} seed {seed}"), counting_steps(clock):
        clock.start = time.perf_counter()
        model_uri = train_classifier(family, model_config, config, data, watch=watch)
        total = time.perf_counter() - start
    run = mlflow.last_active_run()
    summary = clock.summary()
    training = summary["epochs"][-1]["elapsed_s"]
    return {
        **summary,
        "final_test_accuracy": run.data.metrics["test_accuracy"],
        "seed": seed,
        "setup_s": clock.setup_s,
        "step_s": total - clock.excluded,
        "mlflow_s": logging.seconds,
        "mlflow_in_training_s": clock.epoch_logging_s,
        "training_s": training,
        "threads": torch.get_num_threads(),
        "model_uri": model_uri,
    }


def run_digits_on_mnist(bench: Path, framing: bool, augment: str, epochs: int) -> dict:
    """Each classifier trained with its defaults on scikit-learn's digits (framed as MNIST's or
    stretched, augmented or not), scored on its own digits test split and on the bench's real
    MNIST test images, which it never saw."""
    import mlflow

    from neuroflow.jobs.preprocess import preprocess
    from neuroflow.jobs.train_classifier import train_classifier
    from neuroflow.settings import MODELS, TRAINING, PrepareConfig
    from neuroflow.tracking.models import load_model
    from neuroflow.training.batches import to_device
    from neuroflow.training.classifier import evaluate

    _, test = reference_splits(bench)
    real = to_device(*test, "cpu")
    with mlflow.start_run(run_name=f"bench digits framing={framing}"):
        data = preprocess(PrepareConfig(dataset="digits", mnist_framing=framing)).run_id
    scores = {}
    for family in ("mlp", "cnn", "rnn"):
        config = TRAINING[family]
        if epochs:
            config = dataclasses.replace(config, epochs=epochs)
        if augment != "default":
            config = dataclasses.replace(config, augment=augment)
        with mlflow.start_run(run_name=f"bench digits {family}") as run:
            uri = train_classifier(family, MODELS[family](), config, data)
        own = mlflow.get_run(run.info.run_id).data.metrics["test_accuracy"]
        scores[family] = {"digits": own, "mnist": evaluate(load_model(uri), *real).accuracy}
    return {"framing": framing, "augment": augment, "scores": scores}


def run_dcgan(bench: Path, epochs: int) -> dict:
    import mlflow

    from neuroflow.families import DCGANConfig
    from neuroflow.jobs.train_dcgan import train_dcgan
    from neuroflow.settings import GANTrainConfig

    meta = json.loads((bench / "bench.json").read_text())
    config = GANTrainConfig(epochs=epochs or 2)
    clock = Clock(None, meta["train_count"])

    def watch(model, epoch: int) -> None:
        clock.epoch(model, epoch) if epoch else clock.restart(model)

    with mlflow.start_run(run_name="bench dcgan"):
        clock.start = time.perf_counter()
        train_dcgan(DCGANConfig(), config, meta["data_run_id"], meta["evaluator_uri"], watch)
    return clock.summary()


# Where a 1-batch train_cnn step spends its time, by phase: each phase is the functions that do
# its work, looked up where the step calls them, so a phase nested in another counts once.
JOB = "neuroflow.jobs.train_classifier"
PHASES = {
    "run start": [("mlflow", "start_run")],
    "data load": [(JOB, name) for name in ("find_start", "resolve_data", "open_for", "log_splits")],
    "training": [(JOB, "fit")],
    "evaluation": [(JOB, "evaluate")],
    "model logging": [(JOB, "log_classifier")],
    "plots": [(JOB, "plots.log_loss_curves"), (JOB, "plots.log_confusion_matrix")],
    "run end": [("mlflow", "end_run")],
}


def run_step(bench: Path) -> dict:
    """A 1-batch train_cnn, as `mlflow run` starts it (a cold process, the step's own command
    line), timed by phase; what no phase covers (tags, params, metrics) is "other"."""
    import importlib

    started = time.perf_counter()
    import steps.train_cnn

    module = importlib.import_module(JOB)
    seconds = {"imports": time.perf_counter() - started}
    active: list[str] = []

    def timed(phase: str, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if active:  # inside another phase: counted there
                return function(*args, **kwargs)
            active.append(phase)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start
                active.pop()

        return wrapper

    for phase, places in PHASES.items():
        for name, path in places:
            owner = module if name == JOB else importlib.import_module(name)
            *parents, attribute = path.split(".")
            for parent in parents:  # plots.log_loss_curves: the plots module the job calls
                owner = getattr(owner, parent)
            setattr(owner, attribute, timed(phase, getattr(owner, attribute)))
    meta = json.loads((bench / "bench.json").read_text())
    args = ["--data", meta["data_run_id"], "--epochs", "1", "--max-batches", "1"]
    start = time.perf_counter()
    steps.train_cnn.train_cnn.main(args, standalone_mode=False)
    step_s = time.perf_counter() - start
    seconds["other"] = step_s - sum(v for k, v in seconds.items() if k != "imports")
    return {"phases": seconds}


def run_scaling(bench: Path, idx_dir: Path) -> dict:
    """preprocess an IDX folder (time, and peak memory over what the imports hold), then the
    CNN training core on its train split for 2 epochs (seconds per epoch)."""
    from neuroflow.data.prepared import load_prepared, prepare
    from neuroflow.data.sources import load_source
    from neuroflow.settings import PrepareConfig

    config = PrepareConfig(dataset="idx", data_dir=str(idx_dir))
    before = peak_rss_mb()
    start = time.perf_counter()
    prepare(load_source("idx", str(idx_dir)), idx_dir / "prepared", config)
    preprocess_s = time.perf_counter() - start
    preprocess_peak = peak_rss_mb()

    import torch

    from neuroflow.families import CNNConfig
    from neuroflow.models.build import build_classifier
    from neuroflow.settings import TrainConfig
    from neuroflow.training.batches import to_device
    from neuroflow.training.classifier import fit
    from neuroflow.training.device import resolve_device

    prepared = load_prepared(idx_dir / "prepared")
    device = resolve_device("auto")
    torch.manual_seed(0)
    model = build_classifier(
        "cnn", CNNConfig(), prepared.image_shape, prepared.mean, prepared.std, prepared.classes
    ).to(device)
    splits = {
        s: to_device(prepared.images[s], prepared.labels[s], device) for s in ("train", "val")
    }
    config = TrainConfig(epochs=2, patience=0)
    clock = Clock(None, len(prepared.labels["train"]))
    clock.restart(model)
    fit(model, splits["train"], splits["val"], config, lambda m, e: clock.epoch(model, e))
    return {
        "train_count": len(prepared.labels["train"]),
        "preprocess_s": preprocess_s,
        "preprocess_base_mb": before,
        "preprocess_peak_mb": preprocess_peak,
        "seconds_per_epoch": clock.summary()["seconds_per_epoch"],
    }


@click.command()
@click.argument("name")
@click.option("--bench-dir", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--epochs", type=click.IntRange(min=0), default=0, help="0: the defaults")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="added to the default seed")
@click.option("--stop", is_flag=True, help="stop at the target accuracy (reference only)")
@click.option("--idx-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--framing", type=click.Choice(["true", "false"]), default="true")
@click.option("--augment", type=click.Choice(["default", "auto", "false"]), default="default")
def main(
    name: str,
    bench_dir: str,
    epochs: int,
    seed: int,
    stop: bool,
    idx_dir: str | None,
    framing: str,
    augment: str,
):
    bench = Path(bench_dir)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{bench / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if name == "step":  # a cold process: nothing imported ahead of the step
        with contextlib.redirect_stdout(sys.stderr):
            result = run_step(bench)
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return
    # torch.optim's optimizers (the reference's Adadelta) import torch._dynamo when the first
    # is built, 1-2 s: a start-up cost, counted in the user row and the step breakdown and
    # kept off the training clocks.
    import torch._dynamo  # noqa: F401

    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the result
        if name in ("reference", "cnn-in-reference-loop"):
            ours = name != "reference"
            result = run_reference(bench, epochs, seed, stop, ours)
        elif name == "reference-net-in-our-loop":
            result = run_reference_net_in_our_loop(bench, epochs, seed)
        elif name in ("mlp", "cnn", "rnn"):
            result = run_classifier(bench, name, epochs, seed)
        elif name == "dcgan":
            result = run_dcgan(bench, epochs)
        elif name == "digits-on-mnist":
            result = run_digits_on_mnist(bench, framing == "true", augment, epochs)
        elif name == "scaling" and idx_dir:
            result = run_scaling(bench, Path(idx_dir))
        else:
            raise click.BadParameter(
                f"{name!r}; expected reference, cnn-in-reference-loop, "
                "reference-net-in-our-loop, mlp, cnn, rnn, dcgan, digits-on-mnist, step or "
                "scaling --idx-dir"
            )
    print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
