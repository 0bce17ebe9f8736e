"""The benchmark harness: this project's training against the pytorch/examples MNIST loop, side
by side on this machine, plus per-family speed, pipeline costs and scaling.

    python -m benchmarks [--json benchmark-results.json] [--quick] [--skip-pipeline]

Data: the real MNIST test split (10,000 images) when `--mnist-t10k` names its folder, or it is
found at ../shared/datasets/mnist-t10k beside the checkout: the first 8,000 images to train on
(ours holds 10% of them out for validation), the last 2,000 to test. Otherwise scikit-learn's
digits, and the table says so. Each workload runs in its own process (benchmarks/workloads.py),
so each has a cold start and its own peak RSS.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from benchmarks import startup

ROOT = Path(__file__).resolve().parents[1]
SIBLING_MNIST = ROOT.parent / "shared" / "datasets" / "mnist-t10k"
TRAIN_IMAGES, TEST_IMAGES = 8000, 2000

# --mnist-t10k for the benchmarks that take the folder as a Path (predict, data, loaders)
MNIST_OPTION = click.option(
    "--mnist-t10k",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="the MNIST t10k IDX folder; default ../shared/datasets/mnist-t10k when there",
)


def mnist_folder(given: Path | None) -> Path | None:
    """The MNIST t10k folder given, else ../shared's when there, else None (the digits)."""
    return given or (SIBLING_MNIST if SIBLING_MNIST.is_dir() else None)


SCALING_SIZES = (1000, 2500, 5000, 10000)
TARGETS = {"cnn": 0.985, "rnn": 0.975, "mlp": 0.965}  # final test accuracy each should reach
SEEDS = 3  # runs of the reference and of our CNN, for the median and range


def write_idx_folder(folder: Path, train, test=None) -> Path:
    from neuroflow.data.idx import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", train[0])
    write_idx(folder / "train-labels-idx1-ubyte", train[1])
    if test is not None:
        write_idx(folder / "t10k-images-idx3-ubyte", test[0])
        write_idx(folder / "t10k-labels-idx1-ubyte", test[1])
    return folder


def source_images(mnist: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """All images of the benchmark's source, 28x28 uint8, in their file order."""
    from neuroflow.data.sources import load_source

    if mnist is not None:
        (part,) = load_source("idx", str(mnist)).parts
        return part.images, part.labels, f"MNIST t10k ({mnist})"
    import torch
    import torch.nn.functional as F

    (part,) = load_source("digits", "").parts
    images = torch.from_numpy(part.images).float()[:, None]
    resized = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = resized[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return images, part.labels, "scikit-learn digits (no MNIST folder found)"


def prepare_bench(bench: Path, mnist: Path | None, quick: bool) -> dict:
    """Write the train/test IDX folder, run the real preprocess on it into the bench store, and
    save the same images for the reference."""
    import mlflow

    from neuroflow.data.prepared import load_prepared
    from neuroflow.jobs.preprocess import preprocess
    from neuroflow.settings import PrepareConfig

    images, labels, label = source_images(mnist)
    if mnist is not None:
        split = len(labels) - TEST_IMAGES
        train, test = (images[:split], labels[:split]), (images[split:], labels[split:])
    else:  # digits has no test split of its own; hold out the last fifth
        split = len(labels) * 4 // 5
        train, test = (images[:split], labels[:split]), (images[split:], labels[split:])
    if quick:
        train, test = (train[0][:600], train[1][:600]), (test[0][:200], test[1][:200])
    folder = write_idx_folder(bench / "idx", train, test)
    mlflow.set_tracking_uri(f"sqlite:///{bench / 'mlflow.db'}")
    # An experiment of its own, so no artifact lands in ./mlruns of the working directory; the
    # workloads and `mlflow run` inherit it through the environment.
    mlflow.create_experiment("bench", artifact_location=(bench / "artifacts").as_uri())
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "bench"
    mlflow.set_experiment("bench")
    with mlflow.start_run(run_name="bench preprocess"):
        ref = preprocess(PrepareConfig(dataset="idx", data_dir=str(folder)))
    local = mlflow.artifacts.download_artifacts(ref.uri, dst_path=str(bench))  # bench/prepared
    prepared = load_prepared(Path(local))
    np.savez(
        bench / "reference.npz",
        train_images=train[0],
        train_labels=train[1],
        test_images=prepared.images["test"],
        test_labels=prepared.labels["test"],
    )
    meta = {
        "data": label,
        "data_run_id": ref.run_id,
        "train_count": len(prepared.labels["train"]),
        "val_count": len(prepared.labels["val"]),
        "test_count": len(prepared.labels["test"]),
        "reference_train_count": len(train[1]),
    }
    (bench / "bench.json").write_text(json.dumps(meta))
    return meta


def workload(name: str, bench: Path, *args: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.workloads", name, "--bench-dir", str(bench)]
    started = time.perf_counter()
    done = subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"workload {name} failed:\n{done.stderr[-3000:]}")
    return {
        **json.loads(done.stdout.strip().splitlines()[-1]),
        "process_s": time.perf_counter() - started,
    }


def median_spread(values: list) -> dict:
    """The median and range of `values`, None for a run that never reached the target."""
    reached = [v for v in values if v is not None]
    if len(reached) < len(values) or not reached:
        return {"median": None, "low": None, "high": None, "values": values}
    return {
        "median": statistics.median(reached),
        "low": min(reached),
        "high": max(reached),
        "values": values,
    }


def step_cost(bench: Path, repeats: int) -> dict:
    """A 1-batch train_cnn: by phase in its own cold process (the median of `repeats`), and
    whole through `mlflow run`, against `import torch, mlflow`, alternated in one loop."""
    runs = [workload("step", bench) for _ in range(repeats)]
    phases = {k: statistics.median(r["phases"][k] for r in runs) for k in runs[0]["phases"]}
    meta = json.loads((bench / "bench.json").read_text())
    command = [*mlflow_run("train_cnn"), "-P", f"data={meta['data_run_id']}"]
    command += ["-P", "epochs=1", "-P", "max_batches=1"]
    walls, imports = [], []
    for _ in range(repeats):
        walls.append(timed(command, bench))
        imports.append(timed([sys.executable, "-c", "import torch, mlflow"], bench))
    return {
        "phases": phases,
        "process_s": statistics.median(r["process_s"] for r in runs),
        "mlflow_run_s": statistics.median(walls),
        "import_torch_mlflow_s": statistics.median(imports),
    }


def mlflow_run(entry_point: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(ROOT),
        "-e",
        entry_point,
        "--env-manager",
        "local",
    ]


def bench_env(bench: Path) -> dict:
    """The bench's store and experiment, by name: mlflow.set_experiment also exports its id,
    and `mlflow run` refuses to be given both."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{bench / 'mlflow.db'}"}
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def checked(command: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run `command` against the bench's store: (what it printed, its wall time); a failure
    stops the benchmark with its stderr."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=bench_env(cwd), capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return done, time.perf_counter() - started


def timed(command: list[str], cwd: Path) -> float:
    return checked(command, cwd)[1]


def user_row(bench: Path) -> dict:
    """What a user waits for, from a cold start: `mlflow run . -e train_cnn` with its defaults
    (10 epochs; past 98% by the end), and `python benchmarks/reference.py`, which stops at the
    first epoch end at 98%."""
    import mlflow

    meta = json.loads((bench / "bench.json").read_text())
    ours = timed([*mlflow_run("train_cnn"), "-P", f"data={meta['data_run_id']}"], bench)
    where = "tags.step = 'train_cnn' and params.max_batches = '0'"
    newest = ["attributes.start_time DESC"]
    run = mlflow.search_runs(
        filter_string=where, order_by=newest, max_results=1, output_format="list"
    )[0]
    script = [sys.executable, str(ROOT / "benchmarks" / "reference.py")]
    reference = timed([*script, str(bench / "reference.npz")], bench)
    return {
        "ours_s": ours,
        "ours_test_accuracy": run.data.metrics["test_accuracy"],
        "reference_s": reference,
    }


def cached_main_rerun(work: Path) -> dict:
    """`mlflow run .` with 1 epoch per trainer, then the same again, which reuses every step
    from the step cache; the count of steps it reused tells if it did."""
    command = [*mlflow_run("main"), "-P", "epochs=1"]
    _, first = checked(command, work)
    done, rerun = checked(command, work)
    return {
        "first_run_s": first,
        "cached_rerun_s": rerun,
        "rerun_reused_steps": done.stdout.count(": reusing run "),  # as main prints each
    }


def fmt(value, spec=".1f", none="never"):
    return none if value is None else format(value, spec)


def spread(row: dict, spec=".1f") -> str:
    if row["median"] is None:
        reached = [v for v in row["values"] if v is not None]
        return f"{len(reached)} of {len(row['values'])} reached"
    return f"{row['median']:{spec}} [{row['low']:{spec}}-{row['high']:{spec}}]"


def print_tables(results: dict) -> None:
    meta, seeds = results["data"], results["seeds"]
    ref, ours = results["reference"][0], results["cnn"][0]
    print(
        f"\ndata: {meta['data']}; train {meta['reference_train_count']} "
        f"(ours: {meta['train_count']} + {meta['val_count']} val), test {meta['test_count']}"
    )
    print(f"machine: {results['machine']}\n")

    ref_times, our_times = seeds["reference_time"], seeds["cnn_time"]
    ratio = None
    if ref_times["median"] and our_times["median"]:
        ratio = f"{ref_times['median'] / our_times['median']:.1f}x"
    print(f"CNN, {len(our_times['values'])} seeds: median [range]")
    print(f"{'':<34}{'reference':>20}{'ours':>20}{'ratio':>8}")
    rows = [
        ("time to 98% test accuracy (s)", spread(ref_times), spread(our_times), ratio),
        (
            "steps to 98%",
            spread(seeds["reference_steps"], ".0f"),
            spread(seeds["cnn_steps"], ".0f"),
            "",
        ),
        (
            "training throughput (images/s)",
            fmt(ref["images_per_s"], ".0f"),
            fmt(ours["images_per_s"], ".0f"),
            f"{ours['images_per_s'] / ref['images_per_s']:.1f}x",
        ),
        (
            "final test accuracy (seed 0)",
            fmt(ref["final_test_accuracy"], ".4f"),
            fmt(ours["final_test_accuracy"], ".4f"),
            "",
        ),
        ("peak RSS (MiB)", fmt(ref["peak_rss_mb"], ".0f"), fmt(ours["peak_rss_mb"], ".0f"), ""),
    ]
    for title, a, b, r in rows:
        print(f"{title:<34}{a:>20}{b:>20}{r or '':>8}")
    print("(judged every 100 steps and at epoch ends; scoring the test split is off the clock)")

    ablation = results["ablation"]
    print(f"\n{'time to 98% (s), seed 0':<34}{'reference Net':>16}{'our CNN':>16}")
    print(
        f"{'reference loop':<34}{fmt(ref['time_to_target_s']):>16}"
        f"{fmt(ablation['cnn_in_reference_loop']['time_to_target_s']):>16}"
    )
    print(
        f"{'our loop':<34}{fmt(ablation['reference_net_in_our_loop']['time_to_target_s']):>16}"
        f"{fmt(ours['time_to_target_s']):>16}"
    )

    if user := results.get("user"):
        print(
            f"\nas a user waits, cold start: python benchmarks/reference.py (to 98%) "
            f"{user['reference_s']:.1f} s; mlflow run . -e train_cnn (10 epochs, test accuracy "
            f"{user['ours_test_accuracy']:.4f}) {user['ours_s']:.1f} s: "
            f"{user['reference_s'] / user['ours_s']:.1f}x"
        )

    print(
        f"\n{'family':<8}{'images/s':>10}{'s/epoch':>9}{'epochs':>8}{'test acc':>10}"
        f"{'target':>8}{'peak MiB':>10}"
    )
    for family in ("mlp", "cnn", "rnn", "dcgan"):
        row = results.get(family)
        if not row:
            continue
        row = row[0] if isinstance(row, list) else row
        accuracy = row.get("final_test_accuracy")
        target = TARGETS.get(family)
        print(
            f"{family:<8}{fmt(row['images_per_s'], '.0f'):>10}"
            f"{fmt(row['seconds_per_epoch'], '.2f'):>9}{len(row['epochs']):>8}"
            f"{fmt(accuracy, '.4f', '-'):>10}{fmt(target, '.3f', '-'):>8}"
            f"{row['peak_rss_mb']:>10.0f}"
        )

    if rows := results.get("digits_on_mnist"):
        print("\ntrained on the digits, test accuracy on the digits / on real MNIST")
        print(f"{'':<34}{'mlp':>14}{'cnn':>14}{'rnn':>14}")
        for row in rows:
            how = "framed" if row["framing"] else "stretched"
            how += ", augment " + ("as the defaults" if row["augment"] == "default" else "off")
            cells = [
                f"{row['scores'][f]['digits']:.3f} / {row['scores'][f]['mnist']:.3f}"
                for f in ("mlp", "cnn", "rnn")
            ]
            print(f"{how:<34}" + "".join(f"{cell:>14}" for cell in cells))

    step = results["step"]
    print("\na 1-batch train_cnn step, by phase (median of its cold processes)")
    for phase, seconds in step["phases"].items():
        print(f"  {phase:<16}{seconds:>6.2f} s")
    work = sum(v for k, v in step["phases"].items() if k not in ("imports", "training"))
    print(f"  {'all but imports and training':<16}{work:>6.2f} s")
    print(
        f"  mlflow run . -e train_cnn -P epochs=1 -P max_batches=1: {step['mlflow_run_s']:.2f} s"
        f" = {step['mlflow_run_s'] / step['import_torch_mlflow_s']:.2f}x "
        f"import torch, mlflow ({step['import_torch_mlflow_s']:.2f} s)"
    )

    print("\npipeline")
    share = ours["mlflow_in_training_s"] / ours["training_s"]
    print(
        f"  MLflow logging during CNN training (metrics, checkpoints): "
        f"{ours['mlflow_in_training_s']:.3f} s of {ours['training_s']:.1f} s ({share:.2%})"
    )
    print(
        f"  MLflow in the whole CNN step (setup, logging, model): {ours['mlflow_s']:.2f} s of "
        f"{ours['step_s']:.1f} s ({ours['mlflow_s'] / ours['step_s']:.1%})"
    )
    for name, seconds in results["startup"].items():
        print(f"  start-up, {name}: {seconds:.2f} s")
    if "main" in results:
        print(
            f"  main, first run (1 epoch each): {results['main']['first_run_s']:.1f} s; "
            f"cached rerun: {results['main']['cached_rerun_s']:.1f} s "
            f"({results['main']['rerun_reused_steps']} steps reused)"
        )

    print(
        f"\n{'scaling: images':<18}{'preprocess s':>13}{'preprocess MiB':>15}{'CNN s/epoch':>13}"
        f"{'us/image':>10}"
    )
    for row in results["scaling"]:
        per_image = 1e6 * row["seconds_per_epoch"] / row["train_count"]
        print(
            f"{row['images']:<18}{row['preprocess_s']:>13.2f}{row['preprocess_peak_mb']:>15.0f}"
            f"{row['seconds_per_epoch']:>13.2f}{per_image:>10.0f}"
        )


@click.command()
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default="benchmark-results.json",
    show_default=True,
)
@click.option(
    "--mnist-t10k",
    "mnist",
    type=click.Path(file_okay=False),
    default=None,
    help="folder of the MNIST t10k IDX files",
)
@click.option(
    "--quick",
    is_flag=True,
    help="a tiny subset and 1 epoch each: checks the harness, measures nothing",
)
@click.option("--skip-pipeline", is_flag=True, help="leave out the mlflow run of main")
def main(json_path: str, mnist: str | None, quick: bool, skip_pipeline: bool) -> None:
    """Run every benchmark side by side, print the tables and write them as JSON."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mnist_dir = Path(mnist) if mnist else (SIBLING_MNIST if SIBLING_MNIST.is_dir() else None)
    epochs = ("--epochs", "1") if quick else ()
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "quick": quick,
    }
    with tempfile.TemporaryDirectory(prefix="neuroflow-bench-") as tmp:
        bench = Path(tmp)
        results["data"] = prepare_bench(bench, mnist_dir, quick)
        seeds = range(1 if quick else SEEDS)
        for name in ("reference", "cnn"):
            results[name] = []
            for seed in seeds:
                click.echo(f"running {name}, seed {seed} ...", err=True)
                stop = ("--stop",) if name == "reference" and seed else ()  # seed 0 runs whole
                results[name].append(workload(name, bench, *epochs, "--seed", str(seed), *stop))
        results["seeds"] = {
            f"{name}_{key}": median_spread([r[f"{key}_to_target{unit}"] for r in results[name]])
            for name in ("reference", "cnn")
            for key, unit in (("time", "_s"), ("steps", ""))
        }
        for name in ("mlp", "rnn"):
            click.echo(f"running {name} ...", err=True)
            results[name] = [workload(name, bench, *epochs)]
        click.echo("running the ablations ...", err=True)
        results["ablation"] = {
            "reference_net_in_our_loop": workload("reference-net-in-our-loop", bench, *epochs),
            "cnn_in_reference_loop": workload(
                "cnn-in-reference-loop", bench, "--stop", "--epochs", "1" if quick else "5"
            ),
        }
        meta = json.loads((bench / "bench.json").read_text())
        meta["evaluator_uri"] = results["cnn"][0]["model_uri"]
        (bench / "bench.json").write_text(json.dumps(meta))
        if mnist_dir is not None:  # digits-trained champions, read on real MNIST
            click.echo("training on the digits, scoring on MNIST ...", err=True)
            results["digits_on_mnist"] = [
                workload("digits-on-mnist", bench, *epochs, "--framing", f, "--augment", a)
                for f, a in (("false", "false"), ("true", "false"), ("true", "default"))
            ]
        click.echo("running dcgan ...", err=True)
        results["dcgan"] = workload("dcgan", bench, "--epochs", "1" if quick else "2")
        results["scaling"] = scaling(bench, mnist_dir, quick)
        results["startup"] = startup.measure(repeats=1, warm=False) if quick else startup.measure(3)
        click.echo("timing a 1-batch step ...", err=True)
        results["step"] = step_cost(bench, 1 if quick else 3)
        if not quick:
            click.echo("timing what a user waits for ...", err=True)
            results["user"] = user_row(bench)
        if not (skip_pipeline or quick):
            click.echo("running mlflow run . twice ...", err=True)
            results["main"] = cached_main_rerun(bench)
    Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    click.echo(f"\nwrote {json_path}", err=True)


def scaling(bench: Path, mnist: Path | None, quick: bool) -> list[dict]:
    images, labels, _ = source_images(mnist)
    sizes = (200, 400) if quick else SCALING_SIZES
    rows = []
    for size in sizes:
        take = np.arange(size) % len(labels)  # digits are repeated to reach the larger sizes
        folder = write_idx_folder(bench / f"scale-{size}", (images[take], labels[take]))
        click.echo(f"scaling at {size} images ...", err=True)
        rows.append({"images": size, **workload("scaling", bench, "--idx-dir", str(folder))})
    return rows


if __name__ == "__main__":
    main()
