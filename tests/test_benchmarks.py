"""The benchmark harness runs end to end on a tiny subset, so it cannot rot. It asserts what
the harness reports, never how fast anything was."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT, python_env

pytestmark = pytest.mark.slow  # a process per workload: minutes


def test_the_harness_runs_every_workload_and_writes_its_json(tmp_path):
    out = tmp_path / "results.json"
    had_mlruns = (ROOT / "mlruns").exists()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["quick"] is True
    assert results["data"]["test_count"] == 200
    for name in ("reference", "cnn", "mlp", "rnn"):
        row = results[name]
        assert 0.0 <= row["final_test_accuracy"] <= 1.0, name
        assert row["images_per_s"] > 0 and row["peak_rss_mb"] > 0, name
        assert [e["epoch"] for e in row["epochs"]] == [1], name
    assert results["cnn"]["mlflow_s"] > results["cnn"]["mlflow_in_training_s"] > 0
    assert results["cnn"]["model_uri"].startswith("models:/")
    assert len(results["dcgan"]["epochs"]) == 1
    assert [row["images"] for row in results["scaling"]] == [200, 400]
    assert all(row["preprocess_peak_mb"] >= row["preprocess_base_mb"] for row in results["scaling"])
    assert "train_cnn refusing a bad option" in results["startup"]
    assert "time to 98% test accuracy" in done.stdout and "scaling" in done.stdout
    assert (ROOT / "mlruns").exists() == had_mlruns, "the harness wrote into the checkout"
