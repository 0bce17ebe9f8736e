"""The product end to end: `mlflow run -e main` on a clean checkout, the step cache on a rerun,
a rejected candidate, the lineage of a champion, serving, bad input to the lifecycle steps, and
no secret from the environment in anything the runs logged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from mlflow.entities import ViewType

from helpers import ROOT, Store, commit_all, free_port, project_snapshot, python_env, serving
from neuroflow.families import CLASSIFIERS, FAMILIES

pytestmark = pytest.mark.slow
STEPS_PER_RUN = 1 + 3 + 1 + 4 * 2  # preprocess, 3 classifiers, the DCGAN, register + promote each


# Named like secrets, so the steps must mask their values wherever they would log them.
SECRET_NAMES = ("NEUROFLOW_TEST_API_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MY_KEY")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> SimpleNamespace:
    """`mlflow run -e main -P epochs=2` run twice on a fresh store from a clean commit of the
    project, with `secrets` in its environment (which must appear nowhere in what the runs
    logged), and a commit touching only the README, a test and a notebook in between. Every
    test here shares it."""
    project = project_snapshot(tmp_path_factory.mktemp("project"))
    store = Store(tmp_path_factory.mktemp("store"))
    secrets = {name: f"nf-{uuid.uuid4().hex}" for name in SECRET_NAMES}
    first = store.run("main", project=project, env=secrets, epochs=2)
    assert first.returncode == 0, first.stderr
    for name in ("README.md", "tests/test_settings.py", "notebooks/02_compare_runs.ipynb"):
        with (project / name).open("a") as file:
            file.write("\n")
    commit_all(project, "docs, tests and notebooks only")
    started = time.perf_counter()
    second = store.run("main", project=project, env=secrets, epochs=2)
    rerun_seconds = time.perf_counter() - started
    assert second.returncode == 0, second.stderr
    print(f"cached main rerun: {rerun_seconds:.1f} s wall, mlflow CLI start-up included")
    (preprocess,) = store.runs(
        f"tags.mlflow.parentRunId = '{first.run_id}' and tags.step = 'preprocess'"
    )
    return SimpleNamespace(
        project=project,
        store=store,
        first=first,
        second=second,
        data_run=preprocess.info.run_id,
        secrets=secrets,
    )


def children(store: Store, run_id: str) -> list[str]:
    return sorted(r.data.tags["step"] for r in store.runs(f"tags.mlflow.parentRunId = '{run_id}'"))


def champion(store: Store, family: str):
    return store.client.get_model_version_by_alias(f"digits_{family}", "champion")


def test_main_trains_registers_and_promotes_every_family(pipeline):
    store = pipeline.store
    steps = children(store, pipeline.first.run_id)
    assert len(steps) == STEPS_PER_RUN
    assert steps.count("register") == steps.count("promote") == 4
    for family in FAMILIES:
        version = champion(store, family)
        assert version.tags["family"] == family and version.tags["promotion"] == "promoted"
    summary = store.client.download_artifacts(pipeline.first.run_id, "summary.md")
    rows = [line for line in Path(summary).read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(FAMILIES)  # header and one row per family
    dcgan_run = store.get(champion(store, "dcgan").tags["source_run"])
    cnn = champion(store, "cnn")
    assert dcgan_run.data.params["evaluator_uri"] == f"models:/digits_cnn/{cnn.version}"


def test_a_rerun_after_a_docs_only_commit_reuses_every_step(pipeline):
    store = pipeline.store
    assert children(store, pipeline.second.run_id) == []
    reused = store.get(pipeline.second.run_id).data.tags["reused_steps"].split(",")
    assert len(reused) == STEPS_PER_RUN
    first_children = {
        r.info.run_id for r in store.runs(f"tags.mlflow.parentRunId = '{pipeline.first.run_id}'")
    }
    assert {step.split(":")[1] for step in reused} == first_children


def test_changing_one_trainer_reruns_only_it_and_what_follows(pipeline):
    store = pipeline.store
    result = store.run("main", project=pipeline.project, models="mlp", epochs=3)
    assert result.returncode == 0, result.stderr
    assert children(store, result.run_id) == ["promote", "register", "train_mlp"]
    reused = store.get(result.run_id).data.tags["reused_steps"]
    assert reused == f"preprocess:{pipeline.data_run}"


def test_a_worse_candidate_is_registered_and_rejected(pipeline):
    store = pipeline.store
    before = champion(store, "cnn").version
    # In process, as `mlflow run` runs each step; main ran these steps as processes of their own.
    worse = store.step("train_cnn", data=pipeline.data_run, epochs=1, max_batches=2)
    registered = store.step("register", run_id=worse.run_id)
    decided = store.step("promote", model_name="digits_cnn")
    assert worse.returncode == registered.returncode == decided.returncode == 0, decided.stderr
    candidate = store.get(registered.run_id).data.tags["registered_version"]
    assert champion(store, "cnn").version == before != int(candidate)
    version = store.client.get_model_version("digits_cnn", candidate)
    assert version.tags["promotion"] == "rejected"
    assert float(version.tags["rescored_test_accuracy"]) < float(version.tags["champion_score"])
    tags = store.get(decided.run_id).data.tags
    assert tags["decision"] == "kept the champion" and "does not beat" in tags["reason"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_champion_leads_back_to_its_training_run_and_data(pipeline, family):
    store = pipeline.store
    version = champion(store, family)
    trained = store.get(version.tags["source_run"])
    assert trained.info.run_id == version.run_id and trained.data.tags["family"] == family
    data_run = store.get(trained.data.params["data_run_id"])
    assert data_run.data.tags["step"] == "preprocess"
    assert data_run.data.tags["data_digest"] == version.tags["data_digest"]
    assert trained.data.params["data_digest"] == version.tags["data_digest"]
    splits = {i.dataset.name: i.dataset.digest for i in data_run.inputs.dataset_inputs}
    assert splits == {i.dataset.name: i.dataset.digest for i in trained.inputs.dataset_inputs}


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_serving_a_classifier_champion_returns_labels(pipeline, family, tmp_path):
    store = pipeline.store
    prepared = Path(store.client.download_artifacts(pipeline.data_run, "prepared", str(tmp_path)))
    images = np.load(prepared / "test-images-00000.npy")[:64]
    labels = np.load(prepared / "test-labels.npy")[:64]
    port = free_port()
    env = python_env(MLFLOW_TRACKING_URI=store.uri)
    checked = tmp_path / "champion"  # as the README serves it: a copy checked against its digests
    fetch = [
        sys.executable,
        "-m",
        "neuroflow.tracking.digests",
        f"models:/digits_{family}@champion",
    ]
    subprocess.run([*fetch, str(checked)], env=env, cwd=ROOT, check=True, timeout=300)
    command = [sys.executable, "-m", "mlflow", "models", "serve"]
    command += ["-m", str(checked), "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "-p", str(port)]
    with serving(command, f"http://127.0.0.1:{port}/ping", env=env, cwd=store.folder):
        answer = post_json(f"http://127.0.0.1:{port}/invocations", {"inputs": images.tolist()})
    predicted = np.asarray(answer["predictions"])
    assert predicted.shape == (64,)
    assert (predicted == labels).mean() >= 0.5  # 2 epochs; chance is 0.1


def registry_state(store: Store) -> str:
    client, state = store.client, []
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{model.name}'")
        state.append(
            [
                model.name,
                sorted(model.aliases.items()),
                sorted(model.tags.items()),
                sorted((str(v.version), v.run_id, sorted(v.tags.items())) for v in versions),
            ]
        )
    return json.dumps(sorted(state))


LIFECYCLE_BAD_INPUTS = [
    ("main", {"models": "mlp,svm"}, "unknown families ['svm']"),
    ("main", {"env_manager": "docker"}, "'docker' is not one of"),
    ("register", {"run_id": "{data_run}"}, "is a preprocess run; expected a training run"),
    ("register", {"run_id": "not-a-run"}, "'not-a-run' is not a 32-character run id"),
    ("register", {"family": "cnn", "metric": "fid"}, "a cnn is judged by test_accuracy, not 'fid'"),
    ("promote", {"model_name": "no_such_model"}, "registered model 'no_such_model' does not exist"),
    ("promote", {"model_name": "digits_cnn", "candidate": "staging"}, "has no alias 'staging'"),
    (
        "promote",
        {"model_name": "digits_dcgan", "metric": "test_accuracy"},
        "a dcgan is judged by fid, not 'test_accuracy'",
    ),
    ("promote", {"min_delta": "-1"}, "-1.0 is not in the range x>=0"),
]


@pytest.mark.parametrize(("entry_point", "params", "message"), LIFECYCLE_BAD_INPUTS)
def test_bad_lifecycle_input_changes_nothing(pipeline, entry_point, params, message):
    """On the registry main left, each step run in process as `mlflow run` runs it (the CLI
    path itself is proved in test_bad_input.py)."""
    store = pipeline.store
    params = {k: v.format(data_run=pipeline.data_run) for k, v in params.items()}
    before = registry_state(store)
    result = store.step(entry_point, **params)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.error_lines()
    assert line.startswith(f"{entry_point}: error: ") and message in line
    assert store.get(result.run_id).info.status == "FAILED"
    assert registry_state(store) == before


def test_compare_runs_notebook_shows_every_champion(pipeline, monkeypatch):
    from test_notebooks import execute, outputs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline.store.uri)
    text = outputs(execute("02_compare_runs.ipynb", pipeline.store.folder))
    for family in FAMILIES:
        assert f"digits_{family}" in text
    assert text.count("champion") >= len(FAMILIES)


def test_no_secret_from_the_environment_is_logged_anywhere(pipeline, tmp_path, monkeypatch):
    """Through the whole pipeline of main, every family trained, registered and promoted,
    with secrets in the environment of `mlflow run` (the `pipeline` fixture)."""
    store, secrets = pipeline.store, pipeline.secrets
    monkeypatch.chdir(store.folder)  # where relative artifact locations start
    logged = everything_logged(store, tmp_path / "downloads")
    for kind in ("params", "tags", "run artifacts", "model artifacts", "model versions"):
        assert logged[kind], f"the scan found no {kind}; it would pass without looking"
    leaks = [
        f"{name} in {kind}: {where}"
        for kind, blobs in logged.items()
        for where, blob in blobs
        for name, secret in secrets.items()
        if secret.encode() in blob
    ]
    assert not leaks


def everything_logged(store: Store, downloads: Path) -> dict[str, list[tuple[str, bytes]]]:
    """kind -> [(where, bytes)]: every experiment, run (params, tags, metric keys, dataset
    inputs, every artifact file), logged model (and its files), registered model and version in
    the store, and every file of the store itself."""
    client, found = store.client, defaultdict(list)

    def note(kind: str, where: str, text: str) -> None:
        found[kind].append((where, text.encode()))

    def files(kind: str, folder: Path) -> None:
        for path in folder.rglob("*"):
            if path.is_file():
                found[kind].append((str(path), path.read_bytes()))

    experiments = client.search_experiments(view_type=ViewType.ALL)
    ids = [e.experiment_id for e in experiments]
    for experiment in experiments:
        note("experiments", experiment.name, f"{experiment.name} {experiment.tags}")
    for run in client.search_runs(ids, run_view_type=ViewType.ALL):
        run_id = run.info.run_id
        for key, value in run.data.params.items():
            note("params", f"run {run_id} param {key}", f"{key}={value}")
        for key, value in run.data.tags.items():
            note("tags", f"run {run_id} tag {key}", f"{key}={value}")
        for key in run.data.metrics:
            note("metric keys", f"run {run_id} metric {key}", key)
        for dataset_input in run.inputs.dataset_inputs:
            note("dataset inputs", f"run {run_id}", f"{dataset_input.dataset!r} {dataset_input}")
        files(
            "run artifacts",
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, dst_path=str(downloads / run_id), tracking_uri=store.uri
                )
            ),
        )
    for model in client.search_logged_models(ids):
        note("logged models", model.model_id, f"{model.name} {model.tags} {model.params}")
        files(
            "model artifacts",
            Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=model.artifact_location,
                    dst_path=str(downloads / model.model_id),
                    tracking_uri=store.uri,
                )
            ),
        )
    for registered in client.search_registered_models():
        note(
            "registered models",
            registered.name,
            f"{registered.description} {registered.tags} {registered.aliases}",
        )
        for version in client.search_model_versions(f"name = '{registered.name}'"):
            note(
                "model versions",
                f"{registered.name} version {version.version}",
                f"{version.description} {version.tags} {version.aliases} {version.source}",
            )
    files("store files", store.folder)  # the database and artifact folders, byte for byte
    return found
