"""tune's figures, side by side in one run: the defaults against the best of a search, the
trial-epochs pruning saves, two workers against one, and a tune killed mid-trial and run again,
each through `mlflow run`.

    python -m benchmarks.tune [--mnist-t10k DIR] [--quick] [--json tune-results.json]

Data as for `python -m benchmarks`: the real MNIST 8,000/2,000 split when found, else the digits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click

from benchmarks.__main__ import SIBLING_MNIST, bench_env, mlflow_run, prepare_bench, timed


def tune_command(data: str, params: dict) -> list[str]:
    command = [*mlflow_run("tune"), "-P", f"data={data}"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return command


def tune_run(bench: Path, data: str, **params) -> dict:
    """`mlflow run . -e tune` with `params`: its wall time, what its run logged, and whether
    every trial of the study was run once, as one nested run."""
    import mlflow

    wall = timed(tune_command(data, params), bench)
    where = f"tags.step = 'tune' and tags.study = '{params['study']}'"
    newest = ["attributes.start_time DESC"]
    run = mlflow.search_runs(filter_string=where, order_by=newest, output_format="list")[0]
    metrics = run.data.metrics
    trials = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", output_format="list"
    )
    numbers = sorted(int(trial.data.tags["trial"]) for trial in trials)
    return {
        "run_id": run.info.run_id,
        "wall_s": wall,
        "best_val_loss": metrics["best_val_loss"],
        "test_accuracy": metrics["test_accuracy"],
        "trial_epochs": metrics["trial_epochs"],
        "trials": metrics.get("trials_complete", 0) + metrics.get("trials_pruned", 0),
        "pruned": metrics.get("trials_pruned", 0),
        "failed": metrics.get("trials_fail", 0),
        "trial_runs": len(numbers),
        "each_trial_once": numbers == list(range(numbers[0], numbers[0] + len(numbers))),
    }


def kill_when(command: list[str], cwd: Path, env: dict, ready: Callable[[], bool]) -> float:
    """Start `command` in a process group of its own and kill the group with SIGKILL, as a lost
    machine would be, once `ready()` holds. Returns the seconds it ran."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        while not ready():
            if process.poll() is not None:
                raise click.ClickException(f"{' '.join(command)} ended before it was killed")
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended on its own
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return time.perf_counter() - started


def trial_training(number: int) -> Callable[[], bool]:
    """Whether trial `number` of a tune is running and has trained an epoch."""
    import mlflow

    where = (
        f"tags.trial = '{number}' and attributes.status = 'RUNNING' and metrics.epochs_trained >= 1"
    )
    return lambda: bool(mlflow.search_runs(filter_string=where, output_format="list"))


def killed_and_resumed(bench: Path, data: str, at: int, **params) -> dict:
    """A tune killed while its trial `at` trains, then run again: what each run did."""
    import mlflow

    def trials_of(run_id: str) -> list:
        where = f"tags.mlflow.parentRunId = '{run_id}'"
        return mlflow.search_runs(filter_string=where, output_format="list")

    killed_s = kill_when(tune_command(data, params), bench, bench_env(bench), trial_training(at))
    resumed = tune_run(bench, data, **params)
    where = f"tags.step = 'tune' and tags.study = '{params['study']}'"
    tunes = mlflow.search_runs(filter_string=where, output_format="list")
    (first,) = [run for run in tunes if run.info.run_id != resumed["run_id"]]
    before = trials_of(first.info.run_id)
    killed = [trial for trial in before if trial.info.status == "KILLED"]
    rerun = [
        int(trial.data.tags["trial"])
        for trial in trials_of(resumed["run_id"])
        if killed and trial.data.params == killed[0].data.params
    ]
    return {
        "killed_after_s": killed_s,
        "finished_before_kill": sum(trial.info.status == "FINISHED" for trial in before),
        "killed_trials": len(killed),
        "killed_rerun_as": rerun,
        "resumed": resumed,
    }


def defaults_run(bench: Path, data: str, epochs: int) -> float:
    import mlflow

    timed([*mlflow_run("train_cnn"), "-P", f"data={data}", "-P", f"epochs={epochs}"], bench)
    where = "tags.step = 'train_cnn'"
    newest = ["attributes.start_time DESC"]
    (run,) = mlflow.search_runs(
        filter_string=where, order_by=newest, max_results=1, output_format="list"
    )
    return run.data.metrics["test_accuracy"]


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default="tune-results.json")
@click.option("--mnist-t10k", "mnist", type=click.Path(file_okay=False), default=None)
@click.option("--quick", is_flag=True, help="a tiny subset and 3 trials: checks the harness")
def main(json_path: str, mnist: str | None, quick: bool) -> None:
    """Run tune's measurements, print them and write them as JSON."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mnist_dir = Path(mnist) if mnist else (SIBLING_MNIST if SIBLING_MNIST.is_dir() else None)
    trials, epochs, few = (3, 1, 2) if quick else (20, 3, 8)
    with tempfile.TemporaryDirectory(prefix="neuroflow-tune-bench-") as tmp:
        bench = Path(tmp)
        meta = prepare_bench(bench, mnist_dir, quick)
        data = meta["data_run_id"]
        results = {"data": meta["data"], "trials": trials, "epochs": epochs}
        click.echo("training the defaults ...", err=True)
        results["defaults_test_accuracy"] = defaults_run(bench, data, epochs)
        for pruner in ("none", "median"):
            click.echo(f"tuning, pruner={pruner} ...", err=True)
            results[pruner] = tune_run(
                bench, data, trials=trials, epochs=epochs, pruner=pruner, study=pruner
            )
        for workers in (1, 2):
            click.echo(f"tuning with {workers} worker(s) ...", err=True)
            results[f"workers_{workers}"] = tune_run(
                bench,
                data,
                trials=few,
                epochs=max(1, epochs - 1),
                pruner="none",
                study=f"workers-{workers}",
                workers=workers,
                storage=f"sqlite:///{bench / f'workers-{workers}.db'}",
            )
        click.echo("tuning, killed mid-trial and run again ...", err=True)
        results["killed"] = killed_and_resumed(
            bench,
            data,
            at=few // 2,
            trials=few,
            # a trial long enough to be seen training and killed in, even on --quick's tiny
            # data while the cores are busy with other work
            epochs=6 if quick else 3,
            pruner="none",
            study="killed",
        )
    Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
    none, median = results["none"], results["median"]
    saved = 1 - median["trial_epochs"] / none["trial_epochs"]
    print(f"\ndata: {results['data']}; CNN, {trials} trials of {epochs} epochs")
    print(f"defaults, {epochs} epochs: test accuracy {results['defaults_test_accuracy']:.4f}")
    print(
        f"{'pruner':<10}{'wall s':>8}{'trial-epochs':>14}{'pruned':>8}{'best val_loss':>15}"
        f"{'test acc':>10}"
    )
    for name in ("none", "median"):
        row = results[name]
        print(
            f"{name:<10}{row['wall_s']:>8.1f}{row['trial_epochs']:>14.0f}{row['pruned']:>8.0f}"
            f"{row['best_val_loss']:>15.4f}{row['test_accuracy']:>10.4f}"
        )
    print(
        f"pruning saved {saved:.0%} of trial-epochs; best val_loss "
        f"{median['best_val_loss'] / none['best_val_loss'] - 1:+.1%} against none"
    )
    one, two = results["workers_1"], results["workers_2"]
    print(
        f"{few} trials: 1 worker {one['wall_s']:.1f} s, 2 workers {two['wall_s']:.1f} s "
        f"({one['wall_s'] / two['wall_s']:.2f}x) on {os.cpu_count()} cores; 2 workers ran "
        f"{two['trial_runs']} trial runs for {two['trials']:.0f} trials, each once: "
        f"{two['each_trial_once']}"
    )
    killed = results["killed"]
    again = killed["resumed"]
    print(
        f"killed after {killed['killed_after_s']:.1f} s with {killed['finished_before_kill']} "
        f"trials finished and {killed['killed_trials']} killed; run again, "
        f"{again['wall_s']:.1f} s: {again['trial_runs']} trials (the killed one rerun as "
        f"{killed['killed_rerun_as']}), {again['trials']:.0f} complete and "
        f"{again['failed']:.0f} failed in the study"
    )


if __name__ == "__main__":
    main()
