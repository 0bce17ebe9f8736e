"""The step cache: what counts as the same step, and what does not."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from neuroflow.tracking.cache import defaults, full_params, lookup, normalise

COMMIT = "a" * 40
DATA = "d" * 32


@pytest.mark.parametrize(
    ("one", "other"),
    [("0.003", "3e-3"), ("10", "10.0"), ("''", ""), ("'32,64'", "32,64"), ("True", "true")],
)
def test_spellings_of_one_value_normalise_alike(one, other):
    assert normalise(one) == normalise(other)


@pytest.mark.parametrize(("one", "other"), [("0.003", "0.0031"), ("32,64", "32,128"), ("", "0")])
def test_different_values_stay_different(one, other):
    assert normalise(one) != normalise(other)


def test_defaults_come_from_the_mlproject():
    assert defaults("train_cnn")["epochs"] == "10"
    assert full_params("train_cnn", {"data": DATA})["data"] == DATA
    assert full_params("train_cnn", {"data": DATA})["lr"] == normalise("0.003")


def finished_run(params: dict, commit: str = COMMIT, dirty: str = "false", status="FINISHED"):
    """A train_cnn run as `mlflow run` leaves it: every parameter logged, defaults included."""
    logged = {**defaults("train_cnn"), **params}
    with mlflow.start_run() as run:
        mlflow.log_params(logged)
        mlflow.set_tags({"step": "train_cnn", "git_commit": commit, "git_dirty": dirty})
    MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


def find(params: dict, commit: str = COMMIT, still_valid=None):
    run = lookup("0", "train_cnn", params, commit, still_valid)
    return run.info.run_id if run else None


def test_a_finished_run_with_the_same_params_and_commit_is_reused(tracking):
    run_id = finished_run({"data": DATA})
    assert find({"data": DATA}) == run_id
    assert find({"data": DATA, "lr": "3e-3"}) == run_id  # the default, spelled otherwise


def test_the_newest_of_several_matches_is_reused(tracking):
    finished_run({"data": DATA})
    newest = finished_run({"data": DATA})
    assert find({"data": DATA}) == newest


def test_a_changed_parameter_misses(tracking):
    finished_run({"data": DATA})
    assert find({"data": DATA, "epochs": "11"}) is None


def test_a_changed_upstream_input_misses(tracking):
    finished_run({"data": DATA})
    assert find({"data": "e" * 32}) is None


def test_another_commit_misses(tracking):
    finished_run({"data": DATA})
    assert find({"data": DATA}, commit="b" * 40) is None


def test_a_run_from_a_dirty_tree_misses(tracking):
    finished_run({"data": DATA}, dirty="true")
    assert find({"data": DATA}) is None


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_a_failed_or_killed_run_misses(tracking, status):
    finished_run({"data": DATA}, status=status)
    assert find({"data": DATA}) is None


def test_still_valid_can_veto_a_run(tracking):
    finished_run({"data": DATA})
    assert find({"data": DATA}, still_valid=lambda run: False) is None
