"""The step cache: what counts as the same step, and what does not."""

from __future__ import annotations

import shutil

import mlflow
import pytest
from mlflow import MlflowClient

from helpers import ROOT, commit_all
from neuroflow.tracking.cache import defaults, full_params, lookup, normalise
from neuroflow.tracking.lineage import code_digest, code_files, git_state

DIGEST = "c" * 64
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


def finished_run(params: dict, digest: str = DIGEST, dirty: str = "false", status="FINISHED"):
    """A train_cnn run as `mlflow run` leaves it: every parameter logged, defaults included."""
    logged = {**defaults("train_cnn"), **params}
    with mlflow.start_run() as run:
        mlflow.log_params(logged)
        mlflow.set_tags({"step": "train_cnn", "code_digest": digest, "git_dirty": dirty})
    MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


def find(params: dict, digest: str = DIGEST, still_valid=None):
    run = lookup("0", "train_cnn", params, digest, still_valid)
    return run.info.run_id if run else None


def test_a_finished_run_with_the_same_params_and_code_is_reused(tracking):
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


def test_other_code_misses(tracking):
    finished_run({"data": DATA})
    assert find({"data": DATA}, digest="b" * 64) is None


def test_a_run_from_a_dirty_tree_is_reused(tracking):
    run_id = finished_run({"data": DATA}, dirty="true")
    assert find({"data": DATA}) == run_id


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_a_failed_or_killed_run_misses(tracking, status):
    finished_run({"data": DATA}, status=status)
    assert find({"data": DATA}) is None


def test_still_valid_can_veto_a_run(tracking):
    finished_run({"data": DATA})
    assert find({"data": DATA}, still_valid=lambda run: False) is None


# What the digest covers, in the tiny project of the `checkout` fixture.
NOT_CODE = {
    "README": lambda root: (root / "README.md").write_text("# demo, explained\n"),
    "test": lambda root: (root / "tests" / "test_core.py").write_text("def test_y(): ...\n"),
    "new notebook": lambda root: (root / "notebooks" / "compare.ipynb").write_text("{}\n"),
}
CODE = {
    "edited module": lambda root: (root / "neuroflow" / "core.py").write_text("x = 2\n"),
    "new module": lambda root: (root / "neuroflow" / "new.py").write_text("y = 1\n"),
    "deleted module": lambda root: (root / "neuroflow" / "core.py").unlink(),
    "edited step": lambda root: (root / "steps" / "demo.py").write_text("x = 3\n"),
    "edited MLproject": lambda root: (root / "MLproject").write_text("name: other\n"),
    "edited conda.yaml": lambda root: (root / "conda.yaml").write_text("name: other\n"),
    "edited pins": lambda root: (root / "requirements.txt").write_text("numpy==2.4.7\n"),
}


def bytecode(root):
    folder = root / "neuroflow" / "__pycache__"
    folder.mkdir()
    (folder / "core.cpython-311.pyc").write_bytes(b"\x00compiled")


@pytest.mark.parametrize("change", NOT_CODE.values(), ids=NOT_CODE.keys())
def test_a_commit_outside_the_code_keeps_the_digest_and_reuses_the_run(tracking, checkout, change):
    before, digest = git_state(checkout)[0], code_digest(checkout)
    run_id = finished_run({"data": DATA}, digest=digest)
    change(checkout)
    commit_all(checkout, "not code")
    assert git_state(checkout)[0] != before
    assert code_digest(checkout) == digest
    assert find({"data": DATA}, code_digest(checkout)) == run_id


@pytest.mark.parametrize("committed", [False, True], ids=["uncommitted", "committed"])
def test_an_edit_to_the_library_changes_the_digest_and_misses(tracking, checkout, committed):
    digest = code_digest(checkout)
    finished_run({"data": DATA}, digest=digest)
    CODE["edited module"](checkout)
    if committed:
        commit_all(checkout, "code")
    assert code_digest(checkout) != digest
    assert find({"data": DATA}, code_digest(checkout)) is None


@pytest.mark.parametrize("change", CODE.values(), ids=CODE.keys())
def test_an_uncommitted_change_to_the_code_changes_the_digest(checkout, change):
    digest = code_digest(checkout)
    change(checkout)
    assert code_digest(checkout) != digest


def test_files_git_ignores_in_the_code_and_stray_files_beside_it_are_not_code(checkout):
    digest = code_digest(checkout)
    bytecode(checkout)
    (checkout / "run.log").write_text("output\n")
    assert code_digest(checkout) == digest


def test_outside_git_the_digest_follows_the_files(checkout, tmp_path):
    tarball = shutil.copytree(checkout, tmp_path / "tarball", ignore=shutil.ignore_patterns(".git"))
    assert git_state(tarball) == (None, False)
    digest = code_digest(tarball)
    assert digest == code_digest(checkout)  # the same files, the same digest
    NOT_CODE["README"](tarball)
    bytecode(tarball)
    assert code_digest(tarball) == digest
    CODE["edited module"](tarball)
    assert code_digest(tarball) != digest


def test_the_projects_code_is_its_library_steps_mlproject_and_pins():
    files = set(code_files(ROOT))
    assert {"MLproject", "conda.yaml", "requirements.txt", "steps/main.py"} <= files
    assert "neuroflow/tracking/cache.py" in files
    outside = ("tests/", "notebooks/", "benchmarks/", "README")
    assert not {name for name in files if name.startswith(outside)}
