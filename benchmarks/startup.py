"""Process start-up cost of a step, against bare Python and a bare `import torch, mlflow`.

Each `mlflow run` step is a new process, so what a step imports before it does any work is paid
on every run. The doors (steps/) import neither torch nor mlflow until an option has been checked,
so a refused option should cost about as much as bare Python.

    python benchmarks/startup.py [--repeats 5] [--json startup.json]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
FIRST_STEP = (
    "import neuroflow.jobs.train_classifier, torch; "
    "from neuroflow.training.optim import Optimizer; "
    "p = torch.zeros(1, requires_grad=True); p.sum().backward(); "
    "Optimizer([p], 'adamw', 1e-3).step()"
)
COMMANDS = {
    "python (bare)": ["-c", "pass"],
    "import torch, mlflow (reference)": ["-c", "import torch, mlflow"],
    "import mlflow": ["-c", "import mlflow"],
    "train_cnn refusing a bad option": ["-m", "steps.train_cnn", "--lr=abc"],
    "train_cnn --help": ["-m", "steps.train_cnn", "--help"],
    "import the train_cnn job (all a run needs)": ["-c", "import neuroflow.jobs.train_classifier"],
    "... and take a first optimizer step": ["-c", FIRST_STEP],
}


def wall_time(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    spent = time.perf_counter() - start
    if "Traceback" in done.stderr:  # a refused option exits 2 with one line, not a traceback
        raise RuntimeError(f"{' '.join(args)} crashed:\n{done.stderr[-2000:]}")
    return spent


def measure(repeats: int, warm: bool = True) -> dict[str, float]:
    """The median wall time of each command over `repeats` runs, after one to warm the file
    cache unless `warm` is false."""
    results = {}
    for name, args in COMMANDS.items():
        if warm:
            wall_time(args)
        results[name] = statistics.median(wall_time(args) for _ in range(repeats))
    return results


@click.command()
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(repeats: int, json_path: str | None) -> None:
    """Time each command `repeats` times and print the medians."""
    results = measure(repeats)
    reference = results["import torch, mlflow (reference)"]
    print(f"{'command':<60} {'median s':>9} {'vs reference':>13}")
    for name, seconds in results.items():
        print(f"{name:<60} {seconds:>9.2f} {seconds / reference:>12.2f}x")
    if json_path:
        Path(json_path).write_text(json.dumps({"repeats": repeats, "seconds": results}, indent=2))


if __name__ == "__main__":
    main()
