"""A real local Spark session: the README's TorchDistributor snippet, run as written, trains
the CNN in 2 processes of which only rank 0 logs, as well as one process does."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT, Store

pytestmark = pytest.mark.slow

SNIPPET = re.search(
    r"```python\n(from pyspark\.ml\.torch\.distributor import TorchDistributor\n.*?)```",
    (ROOT / "README.md").read_text(),
    re.S,
)[1]
RUNNER = """
import os, sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
exec(sys.stdin.read())
spark.stop()
"""


def test_the_readme_torchdistributor_snippet_trains_like_one_process(tmp_path):
    store = Store(tmp_path)
    data = store.run("preprocess")
    assert data.returncode == 0, data.stderr
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store.uri,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    one = subprocess.run(
        [sys.executable, "steps/train_cnn.py", f"--data={data.run_id}", "--epochs=10"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    snippet = SNIPPET.replace("<preprocess run id>", data.run_id)
    assert "num_processes=2, local_mode=True, use_gpu=False" in snippet
    two = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=snippet,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    runs = store.runs("tags.step = 'train_cnn'")
    by_procs = {r.data.params["nproc"]: r for r in runs}
    assert len(runs) == 2 and set(by_procs) == {"1", "2"}, "only rank 0 logs"
    distributed = by_procs["2"]
    assert distributed.info.status == "FINISHED"
    assert distributed.data.params["data_run_id"] == data.run_id
    single, shared = (by_procs[n].data.metrics["test_accuracy"] for n in ("1", "2"))
    print(f"test_accuracy: 1 process {single:.4f}, 2 under TorchDistributor {shared:.4f}")
    assert abs(single - shared) <= 0.03
