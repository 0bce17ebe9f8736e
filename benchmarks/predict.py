"""predict's figures, both engines side by side: images/s and peak memory at 10,000 images (the
real MNIST test split) and at 100,000 (the same split tiled 10x), with a CNN trained on the
MNIST 8,000/2,000 split and promoted, and whether the engines agree. Each predict runs through
`mlflow run` under /usr/bin/time, whose peak resident set is the largest process of its tree.

    python -m benchmarks.predict [--mnist-t10k DIR] [--quick] [--json predict-results.json]
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import click
import numpy as np

from benchmarks.__main__ import (
    MNIST_OPTION,
    checked,
    mlflow_run,
    mnist_folder,
    prepare_bench,
    source_images,
)

TILES = 10  # the 100,000-image set: the split this many times over


def champion(bench: Path, data_run: str, epochs: int) -> str:
    """Train the CNN on the bench's split, register and promote it; its models:/ URI."""
    import mlflow

    checked([*mlflow_run("train_cnn"), "-P", f"data={data_run}", "-P", f"epochs={epochs}"], bench)
    (run,) = mlflow.search_runs(
        filter_string="tags.step = 'train_cnn'", output_format="list", search_all_experiments=True
    )
    checked([*mlflow_run("register"), "-P", f"run_id={run.info.run_id}"], bench)
    checked([*mlflow_run("promote"), "-P", "model_name=idx_cnn"], bench)
    return "models:/idx_cnn@champion"


def image_set(bench: Path, images: np.ndarray, labels: np.ndarray, tiles: int) -> Path:
    from neuroflow.data.idx import write_idx

    folder = bench / f"images-{len(labels) * tiles}"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte", np.tile(images, (tiles, 1, 1)))
    write_idx(folder / "t10k-labels-idx1-ubyte", np.tile(labels, tiles))
    return folder


def predict_run(bench: Path, model: str, folder: Path, engine: str) -> dict:
    import mlflow
    import pandas as pd

    command = ["/usr/bin/time", "-v", *mlflow_run("predict")]
    command += ["-P", f"model={model}", "-P", f"data={folder}", "-P", f"engine={engine}"]
    done, wall = checked(command, bench)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    (run,) = mlflow.search_runs(
        filter_string=f"tags.step = 'predict' and params.engine = '{engine}' "
        f"and params.data = '{folder}'",
        output_format="list",
        search_all_experiments=True,
    )
    table = pd.read_parquet(
        mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/predictions.parquet")
    )
    metrics = run.data.metrics
    return {
        "images": int(metrics["images"]),
        "images_per_s": round(metrics["images_per_s"]),
        "scoring_s": round(metrics["scoring_s"], 2),
        "wall_s": round(wall, 1),
        "peak_mib": round(peak_kb / 1024),
        "accuracy": round(metrics["accuracy"], 4),
        "classes": table["class"].to_numpy(),
    }


@click.command()
@MNIST_OPTION
@click.option("--quick", is_flag=True, help="1 epoch, 1,000 and 10,000 images: that it runs")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(mnist_t10k: Path | None, quick: bool, json_path: str | None) -> None:
    mnist = mnist_folder(mnist_t10k)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        bench = Path(tmp)
        meta = prepare_bench(bench, mnist, quick)
        model = champion(bench, meta["data_run_id"], 1 if quick else 3)
        images, labels, label = source_images(mnist)
        if quick:
            images, labels = images[:1000], labels[:1000]
        results["data"] = label
        for tiles in (1, TILES):
            folder = image_set(bench, images, labels, tiles)
            rows = {
                engine: predict_run(bench, model, folder, engine) for engine in ("local", "spark")
            }
            same = bool(np.array_equal(rows["local"]["classes"], rows["spark"]["classes"]))
            for row in rows.values():
                row.pop("classes")
            results[str(len(labels) * tiles)] = {**rows, "same_predictions": same}
    print(f"predict on {results['data']}")
    print(
        f"{'images':>8} {'engine':7}{'images/s':>10}{'scoring s':>11}{'wall s':>8}{'peak MiB':>10}"
    )
    for size, rows in results.items():
        if size == "data":
            continue
        for engine in ("local", "spark"):
            row = rows[engine]
            print(
                f"{size:>8} {engine:7}{row['images_per_s']:>10}{row['scoring_s']:>11}"
                f"{row['wall_s']:>8}{row['peak_mib']:>10}"
            )
        print(f"{'':>8} same predictions from both engines: {rows['same_predictions']}")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
