"""Running from anywhere: MLflow's env managers, a git URI pinned to a commit, and several
processes under torchrun."""

from __future__ import annotations

import subprocess

import pytest

from helpers import Store, project_snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    return project_snapshot(tmp_path_factory.mktemp("snapshot"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with the default digits prepared once."""
    store = Store(tmp_path_factory.mktemp("store"))
    prepared = store.step("preprocess")  # in process: only the data matters here
    assert prepared.returncode == 0, prepared.stderr
    store.data_run = prepared.run_id
    return store


def head(repo) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def remote(snapshot, folder) -> str:
    """A bare clone of `snapshot`, as a file:// git URI a teammate could run.

    The URI leaves out the .git suffix, as remote URLs often do, and git finds neuroflow.git. A
    file:// URI naming an existing folder is taken by MLflow as a local project instead: it
    would run from that folder, checking `-v` out in place, rather than cloning it.
    """
    bare = folder / "neuroflow.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(snapshot), str(bare)], check=True)
    return (folder / "neuroflow").as_uri()


def histories(store: Store, run_id: str) -> dict[str, list[float]]:
    keys = ("train_loss", "val_loss", "val_accuracy", "test_accuracy")
    return {k: [m.value for m in store.client.get_metric_history(run_id, k)] for k in keys}


def test_a_git_uri_with_a_version_runs_that_commit_like_the_checkout(store, snapshot, tmp_path):
    commit = head(snapshot)
    params = {"data": store.data_run, "epochs": 2, "device": "cpu"}
    from_git = store.run(
        "train_mlp",
        project=remote(snapshot, tmp_path),
        options=("--env-manager", "local", "-v", commit),
        **params,
    )
    from_checkout = store.run("train_mlp", project=snapshot, **params)
    assert from_git.returncode == 0, from_git.stderr
    assert from_checkout.returncode == 0, from_checkout.stderr
    tags = store.get(from_git.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == tags["git_commit"] == commit
    assert tags["git_dirty"] == "false"
    assert histories(store, from_git.run_id) == histories(store, from_checkout.run_id)


def test_main_from_a_git_uri_chains_children_from_the_same_clone(store, snapshot, tmp_path):
    commit = head(snapshot)
    result = store.run(
        "main",
        project=remote(snapshot, tmp_path),
        options=("--env-manager", "local", "-v", commit),
        models="mlp",
        epochs=1,
        promote="false",
        use_cache="false",
    )
    assert result.returncode == 0, result.stderr
    main_run = store.get(result.run_id)
    children = store.runs(f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(c.data.tags["step"] for c in children) == ["preprocess", "register", "train_mlp"]
    for child in children:
        assert child.data.tags["git_commit"] == commit
        assert (
            child.data.tags["mlflow.source.name"] == main_run.data.tags["mlflow.source.name"]
            or child.data.tags["mlflow.source.git.commit"] == commit
        )


def test_two_processes_train_like_one(store, snapshot):
    params = {"data": store.data_run, "epochs": 6, "device": "cpu"}
    single = store.run("train_mlp", project=snapshot, **params)
    double = store.run("train_mlp", project=snapshot, nproc=2, **params)
    assert single.returncode == 0, single.stderr
    assert double.returncode == 0, double.stderr
    run = store.get(double.run_id)
    assert run.data.params["nproc"] == "2"
    assert len(store.client.get_metric_history(double.run_id, "val_loss")) == 6  # logged once
    assert len(store.runs(f"tags.mlflow.parentRunId = '{double.run_id}'")) == 0
    one, two = (store.get(r.run_id).data.metrics["test_accuracy"] for r in (single, double))
    assert abs(one - two) <= 0.03, (one, two)


@pytest.mark.parametrize("manager", ["virtualenv", "uv"])
def test_env_managers_build_the_environment_from_conda_yaml(snapshot, tmp_path, manager):
    store = Store(tmp_path)
    env = {"MLFLOW_ENV_ROOT": str(tmp_path / "envs"), **uv_sources()}
    result = store.run(
        "preprocess",
        project=snapshot,
        options=("--env-manager", manager),
        env=env,
        val_fraction=0.15,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = store.get(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.env"] == manager
    assert run.data.tags["versions.torch"].startswith("2.14.1")
    assert any((tmp_path / "envs").iterdir())


def uv_sources() -> dict[str, str]:
    """pip's package sources on this machine, handed to uv too (uv does not read pip's
    configuration), so both install torch from the same place."""
    sources = {}
    for key, variable in (
        ("global.find-links", "UV_FIND_LINKS"),
        ("global.extra-index-url", "UV_EXTRA_INDEX_URL"),
    ):
        found = subprocess.run(["pip", "config", "get", key], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            sources[variable] = found.stdout.strip()
    if "UV_EXTRA_INDEX_URL" in sources:
        # pip picks the best version across all indexes; uv stops at the first index that has
        # the package, unless told to do as pip does.
        sources["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    return sources
