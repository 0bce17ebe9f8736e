"""Which pickle-free format serves better: MLflow's `serialization_format="pt2"` (torch.export)
against the models-from-code format every model is logged in (neuroflow.tracking.models), side
by side in one process, for each classifier family at its default settings.

    python -m benchmarks.model_format [--json model-format.json] [--repeats 20] [--quick]

For each it reports whether the model could be saved at all, the time to log it, the time
`mlflow.pyfunc.load_model` takes (each load in a fresh process, so imports count as a server's
would), the pyfunc's predict latency for 1 image and for a batch of 1,000, and its size.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

FAMILIES = ("mlp", "cnn", "rnn")
LOAD = """
import sys, time
start = time.perf_counter()
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
print(time.perf_counter() - start)
"""


def network(family: str):
    from neuroflow.models.build import build_classifier
    from neuroflow.settings import MODELS

    classes = [str(i) for i in range(10)]
    return build_classifier(family, MODELS[family](), (28, 28), 33.0, 78.0, classes).eval()


def log(family: str, form: str, example: np.ndarray) -> str:
    """The model URI of `family` logged in `form`, in the active run."""
    import mlflow

    from neuroflow.tracking.models import log_classifier

    if form == "code":
        return log_classifier(network(family), example).model_uri
    return mlflow.pytorch.log_model(
        network(family), name=f"{family}-pt2", serialization_format="pt2", input_example=example
    ).model_uri


def fresh_load_s(uri: str, tracking_uri: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", LOAD, uri],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        )
        times.append(float(done.stdout.split()[-1]))
    return statistics.median(times)


def latency_ms(model, batch: np.ndarray, repeats: int) -> float:
    model.predict(batch)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def size_kb(uri: str) -> float:
    import mlflow

    folder = Path(mlflow.artifacts.download_artifacts(uri))
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1024


def measure(family: str, form: str, tracking_uri: str, repeats: int) -> dict:
    import mlflow

    rng = np.random.default_rng(0)
    example = rng.integers(0, 256, (4, 28, 28)).astype(np.float32)
    start = time.perf_counter()
    try:
        uri = log(family, form, example)
    except Exception as error:  # noqa: BLE001 - what export refuses is the finding
        return {"saved": False, "error": str(error).splitlines()[0][:200]}
    logged = time.perf_counter() - start
    model = mlflow.pyfunc.load_model(uri)
    one, thousand = example[:1], rng.integers(0, 256, (1000, 28, 28)).astype(np.float32)
    return {
        "saved": True,
        "log_s": round(logged, 2),
        "load_s": round(fresh_load_s(uri, tracking_uri, max(3, repeats // 5)), 2),
        "predict_1_ms": round(latency_ms(model, one, repeats), 2),
        "predict_1000_ms": round(latency_ms(model, thousand, max(3, repeats // 4)), 1),
        "size_kb": round(size_kb(uri)),
        "output": str(model.predict(one).dtype),
    }


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--repeats", type=click.IntRange(3), default=20, show_default=True)
@click.option("--quick", is_flag=True, help="the MLP alone, 3 repeats: that the harness runs")
def main(json_path: str | None, repeats: int, quick: bool) -> None:
    import mlflow

    results: dict = {}
    repeats = 3 if quick else repeats
    with tempfile.TemporaryDirectory() as tmp:
        tracking_uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(tracking_uri)
        with mlflow.start_run():
            for family in ("mlp",) if quick else FAMILIES:
                results[family] = {
                    form: measure(family, form, tracking_uri, repeats) for form in ("code", "pt2")
                }
    header = f"{'family':8}{'format':18}{'log s':>7}{'load s':>8}{'1 img ms':>10}"
    print(header + f"{'1000 img ms':>13}{'size KiB':>10}")
    for family, forms in results.items():
        for form, row in forms.items():
            name = "models-from-code" if form == "code" else "pt2"
            if not row["saved"]:
                print(f"{family:8}{name:18} cannot be saved: {row['error']}")
                continue
            print(
                f"{family:8}{name:18}{row['log_s']:>7}{row['load_s']:>8}{row['predict_1_ms']:>10}"
                f"{row['predict_1000_ms']:>13}{row['size_kb']:>10}"
            )
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
