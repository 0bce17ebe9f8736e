"""Faults, through the real `mlflow run` CLI: a training process killed mid-run and resumed, a
tracking server that goes away (and comes back, on sqlite and on PostgreSQL, or not), and `main`
killed during a child. A resume with nothing to resume and a loss that diverges are steps run in
process, as `mlflow run` runs them: no process boundary is involved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import ROOT, Store, free_port, project_snapshot, python_env, tracking_server

pytestmark = pytest.mark.slow

# Small batches make epochs long enough (about a second each) to be killed in the middle of.
SLOW_EPOCHS = {"epochs": 6, "batch_size": 16, "patience": 0}
EPOCH_KEYS = ("train_loss", "val_loss", "val_accuracy")


def start(store_uri: str, cwd: Path, entry_point: str, project=ROOT, **params) -> subprocess.Popen:
    """`mlflow run` in the background, in a session of its own (so killpg reaches it all)."""
    command = [sys.executable, "-m", "mlflow", "run", str(project), "-e", entry_point]
    command += ["--env-manager", "local"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    env = python_env(MLFLOW_TRACKING_URI=store_uri)
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, timeout: float = 300, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)
    return found


def step_process(run_id: str) -> int | None:
    """The pid of the step process working in run `run_id` (MLFLOW_RUN_ID in its environment)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"steps." in cmdline and f"MLFLOW_RUN_ID={run_id}".encode() in environ:
            return int(proc.name)
    return None


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def running_with(client: MlflowClient, step: str, epochs: int, key: str = "val_loss"):
    """A RUNNING `step` run that has logged at least `epochs` epochs of `key`, or None."""
    for run in client.search_runs(["0"], f"tags.step = '{step}' and attributes.status = 'RUNNING'"):
        if len(client.get_metric_history(run.info.run_id, key)) >= epochs:
            return run
    return None


def kill_and_resume(store: Store, step: str, key: str, **params):
    """Three runs of `step`: one unbroken, one SIGKILLed after `key` has 2 epochs logged, and
    one with resume=true that goes on from the killed one. Returns (unbroken run id, killed run
    id, resumed run)."""
    whole = store.run(step, **params)
    assert whole.returncode == 0, whole.stderr

    broken = start(store.uri, store.folder, step, **params)
    run = wait_for(lambda: running_with(store.client, step, 2, key), what="second epoch")
    killed_id = run.info.run_id
    os.kill(wait_for(lambda: step_process(killed_id), what="step process"), signal.SIGKILL)
    assert broken.wait(timeout=120) != 0
    assert store.get(killed_id).info.status in ("FAILED", "KILLED")  # `mlflow run` saw it die
    done = len(store.client.get_metric_history(killed_id, key))
    assert 2 <= done < params["epochs"], "the kill landed after training had ended"

    resumed = store.run(step, resume="true", **params)
    assert resumed.returncode == 0, resumed.stderr
    run = store.get(resumed.run_id)
    assert run.data.tags["resumed_from"] == killed_id
    assert int(run.data.tags["resumed_at_epoch"]) in (done - 1, done)
    return whole.run_id, killed_id, run


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Store:
    """A store with the digits prepared, shared by the tests here: each trains with parameters
    of its own, so none resumes another's broken run."""
    store = Store(tmp_path_factory.mktemp("digits"))
    assert store.run("preprocess").returncode == 0
    return store


def test_a_killed_training_process_resumes_to_the_numbers_of_an_unbroken_run(digits):
    whole_id, _, run = kill_and_resume(digits, "train_rnn", "val_loss", **SLOW_EPOCHS)
    expected = digits.get(whole_id).data.metrics
    for key in ("test_accuracy", "test_loss", "best_epoch"):
        assert run.data.metrics[key] == expected[key], key
    for key in EPOCH_KEYS:  # carried over, then trained on: the whole curve, point for point
        got = history(digits.client, run.info.run_id, key)
        assert got == history(digits.client, whole_id, key), key


def checkpointed_within_the_epoch(client: MlflowClient, step: str):
    """A RUNNING `step` run that has uploaded a checkpoint but logged no epoch yet, or None."""
    for run in client.search_runs(["0"], f"tags.step = '{step}' and attributes.status = 'RUNNING'"):
        run_id = run.info.run_id
        if client.list_artifacts(run_id, "checkpoints") and not client.get_metric_history(
            run_id, "val_loss"
        ):
            return run
    return None


def test_a_run_killed_within_an_epoch_resumes_from_that_batch_to_the_same_numbers(digits):
    """One long epoch (157 batches of 8) checkpointed every 10 batches: killed before it ends,
    the resumed run goes on from the last checkpoint's batch, to the numbers of an unbroken
    run."""
    params = {"epochs": 1, "batch_size": 8, "checkpoint_every": 10, "patience": 0}
    whole = digits.run("train_rnn", **params)
    assert whole.returncode == 0, whole.stderr
    broken = start(digits.uri, digits.folder, "train_rnn", **params)
    run = wait_for(lambda: checkpointed_within_the_epoch(digits.client, "train_rnn"))
    killed_id = run.info.run_id
    os.kill(wait_for(lambda: step_process(killed_id), what="step process"), signal.SIGKILL)
    assert broken.wait(timeout=120) != 0
    assert not digits.client.get_metric_history(killed_id, "val_loss"), "the epoch had ended"
    resumed = digits.run("train_rnn", resume="true", **params)
    assert resumed.returncode == 0, resumed.stderr
    run = digits.get(resumed.run_id)
    assert run.data.tags["resumed_from"] == killed_id
    assert run.data.tags["resumed_at_epoch"] == "0"
    assert int(run.data.tags["resumed_at_batch"]) % 10 == 0 < int(run.data.tags["resumed_at_batch"])
    expected = digits.get(whole.run_id).data.metrics
    for key in ("test_accuracy", "test_loss", "train_loss", "val_loss", "val_accuracy"):
        assert run.data.metrics[key] == expected[key], key


def test_a_killed_dcgan_resumes_to_the_curves_of_an_unbroken_run(digits):
    params = {"epochs": 6, "max_batches": 10, "score_every": 2}
    whole_id, killed_id, run = kill_and_resume(digits, "train_dcgan", "d_loss", **params)
    assert run.data.params["evaluator_uri"] == digits.get(killed_id).data.params["evaluator_uri"]
    for key in ("d_loss", "g_loss", "fid", "inception_score", "class_coverage"):
        got = history(digits.client, run.info.run_id, key)
        assert got == history(digits.client, whole_id, key), key
    assert "model_uri" in run.data.tags


def test_resume_without_a_broken_run_trains_from_scratch(digits):
    result = digits.step("train_mlp", epochs=2, resume="true")
    assert result.returncode == 0, result.stderr
    run = digits.get(result.run_id)
    assert "resumed_from" not in run.data.tags
    assert len(digits.client.get_metric_history(result.run_id, "val_loss")) == 2


def test_a_diverging_loss_fails_the_run_and_names_the_last_good_epoch(digits):
    result = digits.step("train_mlp", lr=1e12, epochs=3)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.error_lines()
    assert line.startswith("train_mlp: error: train_loss became") and "lower lr" in line
    run = digits.get(result.run_id)
    assert run.info.status == "FAILED"
    logged = len(digits.client.get_metric_history(result.run_id, "val_loss"))
    assert run.data.tags["last_good_epoch"] == str(logged)
    assert "model_uri" not in run.data.tags


def test_training_survives_a_tracking_server_restart_with_no_metric_lost(tmp_path, backend):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    store = Store(tmp_path, uri)
    with tracking_server(tmp_path / "server", port, backend):
        assert store.run("preprocess").returncode == 0
        training = start(uri, tmp_path, "train_rnn", **SLOW_EPOCHS)
        run = wait_for(lambda: running_with(store.client, "train_rnn", 1), what="first epoch")
    # The server is down now; MLflow's client retries while it comes back on the same port.
    time.sleep(3)
    with tracking_server(tmp_path / "server", port, backend):
        _, stderr = training.communicate(timeout=600)
        assert training.returncode == 0, stderr[-3000:]
        finished = store.get(run.info.run_id)
        assert finished.info.status == "FINISHED"
        points = 0
        for key in EPOCH_KEYS:
            steps = [step for step, _ in history(store.client, run.info.run_id, key)]
            assert steps == list(range(1, SLOW_EPOCHS["epochs"] + 1)), key
            points += len(steps)
        assert "model_uri" in finished.data.tags
    epochs = SLOW_EPOCHS["epochs"]
    print(f"FINISHED across the restart, {points} metric points ({len(EPOCH_KEYS)} x {epochs})")


def test_a_tracking_server_that_stays_down_fails_the_step_with_one_line_in_bounded_time(
    tmp_path,
):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    client = MlflowClient(uri)
    with tracking_server(tmp_path / "server", port):
        store = Store(tmp_path, uri)
        assert store.run("preprocess").returncode == 0
        options = [f"--{key.replace('_', '-')}={value}" for key, value in SLOW_EPOCHS.items()]
        training = subprocess.Popen(
            [sys.executable, "-m", "steps.train_rnn", *options],
            cwd=ROOT,
            env=python_env(
                MLFLOW_TRACKING_URI=uri,
                MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
                MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: running_with(client, "train_rnn", 1), what="first epoch")
    started = time.monotonic()
    _, stderr = training.communicate(timeout=300)  # a hang fails here
    assert training.returncode != 0
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if "train_rnn: error:" in line]
    assert len(lines) == 1 and f"tracking server {uri} stopped answering" in lines[0]
    print(f"failed {time.monotonic() - started:.1f} s after the server went away")


def test_main_killed_during_a_child_reuses_the_finished_children(tmp_path):
    project = project_snapshot(tmp_path / "project")
    (tmp_path / "store").mkdir()
    store = Store(tmp_path / "store")
    params = {"models": "mlp,cnn", "epochs": 2}
    main = start(store.uri, store.folder, "main", project=project, **params)
    trained = wait_for(
        lambda: store.runs("tags.step = 'train_mlp' and attributes.status = 'FINISHED'"),
        what="finished train_mlp",
    )
    os.killpg(main.pid, signal.SIGKILL)
    main.wait(timeout=60)
    (mlp,) = trained
    (prepared,) = store.runs("tags.step = 'preprocess' and attributes.status = 'FINISHED'")
    finished_before = {r.info.run_id for r in store.runs("attributes.status = 'FINISHED'")}

    rerun = store.run("main", project=project, **params)
    assert rerun.returncode == 0, rerun.stderr
    for step, run in (("preprocess", prepared), ("train_mlp", mlp)):
        (only,) = store.runs(f"tags.step = '{step}' and attributes.status = 'FINISHED'")
        assert only.info.run_id == run.info.run_id, f"{step} was run again"
    (cnn,) = store.runs("tags.step = 'train_cnn' and attributes.status = 'FINISHED'")
    assert cnn.info.run_id not in finished_before
    assert store.get(rerun.run_id).info.status == "FINISHED"
