"""The benchmark harness runs end to end on a tiny subset, so it cannot rot. It asserts what
the harness reports, never how fast anything was."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT, python_env

pytestmark = pytest.mark.slow  # a process per workload: minutes


def quick_run(module: str, out) -> subprocess.CompletedProcess:
    """python -m <module> --quick, writing its JSON to `out`."""
    command = [sys.executable, "-m", module, "--quick", "--json", str(out)]
    return subprocess.run(
        command, cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=900
    )


def test_the_harness_runs_every_workload_and_writes_its_json(tmp_path):
    out = tmp_path / "results.json"
    had_mlruns = (ROOT / "mlruns").exists()
    done = quick_run("benchmarks", out)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["quick"] is True
    assert results["data"]["test_count"] == 200
    for name in ("reference", "cnn", "mlp", "rnn"):
        (row,) = results[name]  # --quick: one seed each
        assert 0.0 <= row["final_test_accuracy"] <= 1.0, name
        assert row["images_per_s"] > 0 and row["peak_rss_mb"] > 0, name
        assert [e["epoch"] for e in row["epochs"]] == [1], name
    assert results["seeds"]["cnn_time"]["values"] == [results["cnn"][0]["time_to_target_s"]]
    for row in results["ablation"].values():
        assert row["epochs"] and row["epochs"][-1]["step"] > 0
    assert results["cnn"][0]["mlflow_s"] > results["cnn"][0]["mlflow_in_training_s"] > 0
    assert results["cnn"][0]["model_uri"].startswith("models:/")
    if "digits_on_mnist" in results:  # the real MNIST split is at hand
        for row in results["digits_on_mnist"]:
            assert all(0 <= s["mnist"] <= 1 for s in row["scores"].values()), row
    phases = results["step"]["phases"]
    assert {"imports", "run start", "training", "model logging", "plots"} <= phases.keys()
    assert all(seconds > 0 for seconds in phases.values()), phases
    assert results["step"]["mlflow_run_s"] > results["step"]["import_torch_mlflow_s"] > 0
    assert len(results["dcgan"]["epochs"]) == 1
    assert [row["images"] for row in results["scaling"]] == [200, 400]
    assert all(row["preprocess_peak_mb"] >= row["preprocess_base_mb"] for row in results["scaling"])
    assert "train_cnn refusing a bad option" in results["startup"]
    assert "time to 98% test accuracy" in done.stdout and "scaling" in done.stdout
    assert (ROOT / "mlruns").exists() == had_mlruns, "the harness wrote into the checkout"


def test_the_tune_benchmark_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "tune.json"
    done = quick_run("benchmarks.tune", out)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    for name in ("none", "median", "workers_1", "workers_2"):
        assert results[name]["trials"] >= 2 and results[name]["wall_s"] > 0, name
    assert results["none"]["pruned"] == 0
    assert results["workers_2"]["each_trial_once"] is True
    killed = results["killed"]
    assert killed["killed_trials"] == 1 and len(killed["killed_rerun_as"]) == 1
    assert killed["resumed"]["trials"] == results["workers_1"]["trials"]  # none lost
    assert killed["resumed"]["failed"] == 1
    assert "pruning saved" in done.stdout


def test_the_model_format_benchmark_compares_both_formats(tmp_path):
    out = tmp_path / "formats.json"
    done = quick_run("benchmarks.model_format", out)
    assert done.returncode == 0, done.stderr[-3000:]
    mlp = json.loads(out.read_text())["mlp"]
    for form in ("code", "pt2"):
        assert mlp[form]["saved"] is True, mlp[form]
        assert mlp[form]["load_s"] > 0 and mlp[form]["predict_1_ms"] > 0
        assert mlp[form]["output"] == "int64"
    assert "models-from-code" in done.stdout


def test_the_predict_benchmark_runs_both_engines_and_writes_its_json(tmp_path):
    out = tmp_path / "predict.json"
    done = quick_run("benchmarks.predict", out)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    for size in ("1000", "10000"):
        assert results[size]["same_predictions"] is True
        for engine in ("local", "spark"):
            row = results[size][engine]
            assert row["images"] == int(size) and row["images_per_s"] > 0, (size, engine)
            assert row["peak_mib"] > 0 and 0 <= row["accuracy"] <= 1


def test_the_data_benchmark_streams_at_two_sizes_and_writes_its_json(tmp_path):
    out = tmp_path / "data.json"
    done = quick_run("benchmarks.data", out)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [row["images"] for row in results["rows"]] == [20000, 40000]
    first = results["rows"][0]
    assert {"train_cnn (auto)", "train_cnn (memory)", "train_cnn (stream)"} <= first.keys()
    for row in results["rows"]:
        assert row["preprocess"]["peak_rss_mib"] > 0 and row["prepared_mib"] > 0
        # no whole split copied to the temporary folder: a shard (16 MiB) and a split's labels
        assert row["preprocess"]["peak_tmp_mib"] < 20, row
        assert row["train_cnn (auto)"]["images_per_s"] > 0
    assert results["stream_vs_memory"] > 0
    assert "streaming against in memory" in done.stdout
