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


class EpochClock:
    """Per-epoch figures from the trainer's watch hook: training time (from `start`, with the
    time spent scoring the test split taken out), images seen, and test accuracy. A call with
    epoch 0 (the model is built, the data ready) restarts the clock and keeps the time before
    it as setup."""

    def __init__(self, test, images_per_epoch: int, score: bool = True, logging=None):
        self.test, self.images_per_epoch, self.score = test, images_per_epoch, score
        self.logging = logging
        self.start = time.perf_counter()
        self.excluded = 0.0
        self.setup_s = 0.0
        self.epoch_logging_s = 0.0  # MLflow's per-epoch logging (metrics, checkpoint) so far
        self.epochs: list[dict] = []

    def __call__(self, model, epoch: int) -> None:
        if epoch == 0:
            now = time.perf_counter()
            self.setup_s, self.start = now - self.start, now
            return
        elapsed = time.perf_counter() - self.start - self.excluded
        if self.logging:
            spent = self.logging.by_name.get
            self.epoch_logging_s = spent("log_metrics", 0.0) + spent("log_artifact", 0.0)
        accuracy = None
        if self.score:
            scoring = time.perf_counter()
            from neuroflow.training.classifier import evaluate

            accuracy = evaluate(model, *self.test).accuracy
            model.train()
            self.excluded += time.perf_counter() - scoring
        self.epochs.append({"epoch": epoch, "elapsed_s": elapsed, "test_accuracy": accuracy})

    def summary(self) -> dict:
        return epoch_summary(self.epochs, self.images_per_epoch, self.excluded)


def epoch_summary(epochs: list[dict], images_per_epoch: int, excluded: float = 0.0) -> dict:
    """Time to the target accuracy, and speed from the epochs after the first, which also
    pays for setup and warm-up."""
    first = next((e for e in epochs if (e["test_accuracy"] or 0) >= TARGET), None)
    times = [e["elapsed_s"] for e in epochs]
    epoch_times = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    steady = float(np.median(epoch_times[1:] or epoch_times))
    return {
        "epochs": epochs,
        "time_to_target_s": first["elapsed_s"] if first else None,
        "epochs_to_target": first["epoch"] if first else None,
        "seconds_per_epoch": steady,
        "images_per_s": images_per_epoch / steady,
        "scoring_excluded_s": excluded,
    }


def reference_splits(bench: Path):
    data = np.load(bench / "reference.npz")
    return (data["train_images"], data["train_labels"]), (data["test_images"], data["test_labels"])


def run_reference(bench: Path, epochs: int) -> dict:
    import torch

    from benchmarks import reference

    train, test = reference_splits(bench)
    log: list[dict] = []

    def on_epoch(epoch: int, training_s: float, accuracy: float, seen: int) -> None:
        log.append({"epoch": epoch, "elapsed_s": training_s, "test_accuracy": accuracy})

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reference.train(train, test, device, epochs or reference.EPOCHS, on_epoch)
    return {**epoch_summary(log, len(train[1])), "final_test_accuracy": log[-1]["test_accuracy"]}


def run_classifier(bench: Path, family: str, epochs: int) -> dict:
    """train_<family> with its shipped defaults (the settings its step is built from), as the
    step calls it, logging to the bench's sqlite store."""
    import mlflow
    import torch

    from neuroflow.jobs.train_classifier import train_classifier
    from neuroflow.settings import MODELS, TRAINING
    from neuroflow.training.classifier import to_device
    from neuroflow.training.device import resolve_device

    meta = json.loads((bench / "bench.json").read_text())
    data = meta["data_run_id"]
    config = TRAINING[family]
    if epochs:
        config = dataclasses.replace(config, epochs=epochs)
    model_config = MODELS[family]()
    _, test = reference_splits(bench)
    device = resolve_device(config.device)
    logging = MlflowClock().install()
    clock = EpochClock(to_device(*test, device), meta["train_count"], logging=logging)
    with mlflow.start_run(run_name=f"bench {family}"):
        clock.start = start = time.perf_counter()
        model_uri = train_classifier(family, model_config, config, data, watch=clock)
        total = time.perf_counter() - start
    run = mlflow.last_active_run()
    summary = clock.summary()
    training = summary["epochs"][-1]["elapsed_s"]
    return {
        **summary,
        "final_test_accuracy": run.data.metrics["test_accuracy"],
        "setup_s": clock.setup_s,
        "step_s": total - clock.excluded,
        "mlflow_s": logging.seconds,
        "mlflow_in_training_s": clock.epoch_logging_s,
        "training_s": training,
        "threads": torch.get_num_threads(),
        "model_uri": model_uri,
    }


def run_dcgan(bench: Path, epochs: int) -> dict:
    import mlflow

    from neuroflow.jobs.train_dcgan import train_dcgan
    from neuroflow.settings import DCGANConfig, GANTrainConfig

    meta = json.loads((bench / "bench.json").read_text())
    config = GANTrainConfig(epochs=epochs or 2)
    clock = EpochClock(None, meta["train_count"], score=False)
    with mlflow.start_run(run_name="bench dcgan"):
        clock.start = time.perf_counter()
        train_dcgan(DCGANConfig(), config, meta["data_run_id"], meta["evaluator_uri"], clock)
    return clock.summary()


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

    from neuroflow.models.build import build_classifier
    from neuroflow.settings import CNNConfig, TrainConfig
    from neuroflow.training.classifier import fit, to_device
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
    clock = EpochClock(None, len(prepared.labels["train"]), score=False)
    fit(model, splits["train"], splits["val"], config, lambda m, e: clock(model, e))
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
@click.option("--idx-dir", type=click.Path(exists=True, file_okay=False), default=None)
def main(name: str, bench_dir: str, epochs: int, idx_dir: str | None) -> None:
    bench = Path(bench_dir)
    # Every torch.optim optimizer imports torch._dynamo when the first is built (about 2 s on
    # 2 cores): a one-time process cost, shown by benchmarks.startup and kept off both clocks.
    import torch._dynamo  # noqa: F401

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{bench / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the result
        if name == "reference":
            result = run_reference(bench, epochs)
        elif name in ("mlp", "cnn", "rnn"):
            result = run_classifier(bench, name, epochs)
        elif name == "dcgan":
            result = run_dcgan(bench, epochs)
        elif name == "scaling" and idx_dir:
            result = run_scaling(bench, Path(idx_dir))
        else:
            raise click.BadParameter(
                f"{name!r}; expected reference, mlp, cnn, rnn, dcgan or scaling --idx-dir"
            )
    print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
