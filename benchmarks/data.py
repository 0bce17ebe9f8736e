"""Data at scale: preprocess and train_cnn on MNIST tiled to 100,000, 1,000,000 and 5,000,000
images, each step its own process under /usr/bin/time (its peak resident set), with the bench's
temporary folder watched for the largest it grows (no step may copy a whole split there).

    python -m benchmarks.data [--mnist-t10k DIR] [--sizes 100000,1000000,5000000] [--quick]
                              [--json data-results.json]

At each size: preprocess (val and test held at VAL_TEST images each, so training's evaluation
costs the same at every size), then train_cnn for one epoch of BATCHES batches with
loading=auto (streamed above 1 GiB of images), and at the smallest size also with
loading=memory and loading=stream, alternated REPEATS times: the median of streaming's
throughput against the in-memory loop's (one process's speed varies by 10% from another's
here). The data is written on the fly and removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.__main__ import MNIST_OPTION, mnist_folder, source_images

ROOT = Path(__file__).resolve().parents[1]
SIZES = (100_000, 1_000_000, 5_000_000)
VAL_TEST = 5_000  # images in each of the val and test splits, at every size
BATCHES = 400  # train batches (of 128) in the one epoch timed
REPEATS = 3  # alternated runs of loading=memory and loading=stream at the smallest size
MiB = 1 << 20


def write_tiled_idx(folder: Path, images: np.ndarray, labels: np.ndarray, count: int) -> Path:
    """An IDX pair of `count` images: `images` over and over, written a copy at a time."""
    folder.mkdir(parents=True)
    rows, cols = images.shape[1:]
    with open(folder / "train-images-idx3-ubyte", "wb") as out:
        out.write(np.array([0x0803, count, rows, cols], ">u4").tobytes())
        for start in range(0, count, len(images)):
            out.write(images[: count - start].tobytes())
    with open(folder / "train-labels-idx1-ubyte", "wb") as out:
        out.write(np.array([0x0801, count], ">u4").tobytes())
        for start in range(0, count, len(labels)):
            out.write(labels[: count - start].tobytes())
    return folder


def folder_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


class Watch:
    """The largest `folder` grows while the block runs, polled every 50 ms."""

    def __init__(self, folder: Path):
        self.folder, self.peak = folder, 0
        self.stop = threading.Event()

    def __enter__(self):
        def poll():
            while not self.stop.wait(0.05):
                self.peak = max(self.peak, folder_size(self.folder))

        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def step(bench: Path, name: str, **options) -> dict:
    """`python -m steps.<name>` under /usr/bin/time against the bench's store: its wall time,
    peak RSS, the largest the temporary folder grew, and the run it made."""
    import mlflow

    command = ["/usr/bin/time", "-v", sys.executable, "-m", f"steps.{name}"]
    command += [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    tmp = bench / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "MLFLOW_TRACKING_URI": tracking_uri(bench)}
    env["MLFLOW_EXPERIMENT_NAME"] = "data"
    started = time.perf_counter()
    with Watch(tmp) as watch:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    mlflow.set_tracking_uri(tracking_uri(bench))
    (run,) = mlflow.search_runs(
        experiment_names=["data"],
        filter_string=f"tags.step = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_kb / 1024),
        "peak_tmp_mib": round(watch.peak / MiB, 1),
        "run": run,
    }


def tracking_uri(bench: Path) -> str:
    return f"sqlite:///{bench / 'mlflow.db'}"


def measure(
    bench: Path, images, labels, count: int, loadings: tuple[str, ...], repeats: int
) -> dict:
    """preprocess and train_cnn at `count` images; the data removed afterwards."""
    import shutil

    source = write_tiled_idx(bench / f"idx-{count}", images, labels, count)
    fraction = VAL_TEST / count
    prep = step(
        bench,
        "preprocess",
        dataset="idx",
        data_dir=source,
        val_fraction=fraction,
        test_fraction=fraction,
    )
    run = prep.pop("run")
    row = {
        "images": count,
        "prepared_mib": round(folder_size(Path(artifacts(run))) / MiB),
        "preprocess": {**prep, "images_per_s": round(count / prep["wall_s"])},
    }
    runs: dict[str, list] = {loading: [] for loading in loadings}
    rounds = repeats if len(loadings) > 1 else 1
    for _ in range(rounds):  # alternated, so a slow spell of the machine hits both
        for loading in loadings:
            trained = step(
                bench,
                "train_cnn",
                data=run.info.run_id,
                epochs=1,
                max_batches=BATCHES,
                loading=loading,
                device="cpu",
            )
            metrics = trained.pop("run").data.metrics
            runs[loading].append({**trained, "images_per_s": round(metrics["train_images_per_s"])})
    for loading, done in runs.items():
        row[f"train_cnn ({loading})"] = median_run(done)
    shutil.rmtree(source)
    shutil.rmtree(artifacts(run))
    return row


def median_run(runs: list[dict]) -> dict:
    """The run of median throughput, with every run's throughput beside it."""
    ordered = sorted(runs, key=lambda r: r["images_per_s"])
    return {**ordered[len(ordered) // 2], "all_images_per_s": [r["images_per_s"] for r in runs]}


def artifacts(run) -> str:
    from mlflow.utils.file_utils import local_file_uri_to_path

    return local_file_uri_to_path(run.info.artifact_uri)


@click.command()
@MNIST_OPTION
@click.option("--sizes", default=",".join(map(str, SIZES)), help="images, comma-separated")
@click.option("--quick", is_flag=True, help="20,000 and 40,000 images, once each: that it runs")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(mnist_t10k: Path | None, sizes: str, quick: bool, json_path: str | None) -> None:
    import mlflow

    mnist = mnist_folder(mnist_t10k)
    counts = (20_000, 40_000) if quick else tuple(int(s) for s in sizes.split(","))
    images, labels, label = source_images(mnist)
    results: dict = {"data": f"{label}, tiled", "quick": quick, "batches": BATCHES, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        bench = Path(tmp)
        mlflow.set_tracking_uri(tracking_uri(bench))
        mlflow.create_experiment("data", artifact_location=(bench / "artifacts").as_uri())
        for count in counts:
            loadings = ("auto", "memory", "stream") if count == counts[0] else ("auto",)
            repeats = 1 if quick else REPEATS
            results["rows"].append(measure(bench, images, labels, count, loadings, repeats))
            print(json.dumps(results["rows"][-1]), flush=True)
    first, last = results["rows"][0], results["rows"][-1]
    results["rss_growth_mib"] = (
        last["train_cnn (auto)"]["peak_rss_mib"] - first["train_cnn (auto)"]["peak_rss_mib"]
    )
    results["stream_vs_memory"] = round(
        first["train_cnn (stream)"]["images_per_s"] / first["train_cnn (memory)"]["images_per_s"],
        3,
    )
    print(table(results))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")


def table(results: dict) -> str:
    lines = [
        f"data: {results['data']}; train_cnn: 1 epoch of {results['batches']} batches",
        f"{'images':>10} {'step':24}{'wall s':>8}{'images/s':>10}{'peak MiB':>10}{'tmp MiB':>9}",
    ]
    for row in results["rows"]:
        for name in ("preprocess", *(k for k in row if k.startswith("train_cnn"))):
            cell = row[name]
            lines.append(
                f"{row['images']:>10,} {name:24}{cell['wall_s']:>8.1f}{cell['images_per_s']:>10,}"
                f"{cell['peak_rss_mib']:>10,}{cell['peak_tmp_mib']:>9.1f}"
            )
    lines.append(
        f"train_cnn peak RSS, largest size against smallest: {results['rss_growth_mib']:+} MiB; "
        f"streaming against in memory at the smallest: {results['stream_vs_memory']:.0%} of "
        "its images/s"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
