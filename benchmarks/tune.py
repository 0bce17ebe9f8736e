"""tune's figures, side by side in one run: the defaults against the best of a search, the
trial-epochs pruning saves, and two workers against one, each through `mlflow run`.

    python -m benchmarks.tune [--mnist-t10k DIR] [--quick] [--json tune-results.json]

Data as for `python -m benchmarks`: the real MNIST 8,000/2,000 split when found, else the digits.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from benchmarks.__main__ import SIBLING_MNIST, mlflow_run, prepare_bench, timed


def tune_run(bench: Path, data: str, **params) -> dict:
    """`mlflow run . -e tune` with `params`: its wall time and what its run logged."""
    import mlflow

    command = [*mlflow_run("tune"), "-P", f"data={data}"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    wall = timed(command, bench)
    where = f"tags.step = 'tune' and tags.study = '{params['study']}'"
    (run,) = mlflow.search_runs(filter_string=where, output_format="list")
    metrics = run.data.metrics
    return {
        "wall_s": wall,
        "best_val_loss": metrics["best_val_loss"],
        "test_accuracy": metrics["test_accuracy"],
        "trial_epochs": metrics["trial_epochs"],
        "trials": metrics.get("trials_complete", 0) + metrics.get("trials_pruned", 0),
        "pruned": metrics.get("trials_pruned", 0),
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
        f"({one['wall_s'] / two['wall_s']:.2f}x) on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
