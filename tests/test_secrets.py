"""No secret from the environment leaves through MLflow, and runs:/ URIs stay inside their run."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import ViewType

from helpers import Store
from neuroflow.tracking.lineage import provenance_tags
from neuroflow.tracking.runs import log_params_once
from neuroflow.tracking.secrets import scrub, secret_values
from neuroflow.tracking.uris import check_data_value

# --- secrets -------------------------------------------------------------------------------

RUN = "0123456789abcdef" * 2


def test_scrub_masks_every_secret_inside_values():
    environ = {
        "NEUROFLOW_TEST_API_TOKEN": "tok-12345",
        "db_password": "hunter22",
        "AWS_SECRET_ACCESS_KEY": "AKIA/abc+def",
        "MY_KEY": "abc",  # too short to be worth masking
        "USE_KEYRING": "true",  # a flag, not a secret
        "HOME": "/home/someone",  # not named like a secret
    }
    logged = scrub(
        {
            "uri": "https://me:hunter22@example.com/data?token=tok-12345",
            "key": "AKIA/abc+def",
            "plain": "abc /home/someone true",
            "epochs": 3,
        },
        environ,
    )
    assert logged == {
        "uri": "https://me:***@example.com/data?token=***",
        "key": "***",
        "plain": "abc /home/someone true",
        "epochs": "3",
    }


def test_a_secret_holding_another_is_masked_whole():
    environ = {"SHORT_TOKEN": "abcd", "LONG_TOKEN": "abcdefgh"}
    assert secret_values(environ) == ["abcdefgh", "abcd"]
    assert scrub({"v": "<abcdefgh|abcd>"}, environ) == {"v": "<***|***>"}


def test_log_params_once_masks_secrets_from_the_environment(tracking, monkeypatch):
    secret = f"nf-{uuid.uuid4().hex}"
    monkeypatch.setenv("NEUROFLOW_TEST_API_TOKEN", secret)
    with mlflow.start_run() as run:
        log_params_once({"data_dir": f"https://me:{secret}@example.com/idx.zip", "seed": 0})
    params = mlflow.get_run(run.info.run_id).data.params
    assert params == {"data_dir": "https://me:***@example.com/idx.zip", "seed": "0"}


def test_provenance_tags_are_scrubbed(monkeypatch):
    monkeypatch.setenv("NEUROFLOW_TEST_KEY", mlflow.__version__)
    tags = provenance_tags()
    assert tags["versions.mlflow"] == "***"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tags["versions.python"])


# --- runs:/ URIs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [f"runs:/{RUN}/../x", f"runs:/{RUN}/prepared/../../x", f"runs:/{RUN}/..\\x"]
)
def test_a_runs_uri_may_not_climb_out_of_its_run(value):
    with pytest.raises(ValueError, match=re.escape(f"{value!r} climbs out of the run's")):
        check_data_value(value)


def test_a_runs_uri_inside_its_run_is_accepted():
    value = f"runs:/{RUN}/prepared/..hidden"  # '..' inside a name is not a component
    assert check_data_value(value) == value


# --- end to end ----------------------------------------------------------------------------


SECRET_NAMES = ("NEUROFLOW_TEST_API_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MY_KEY")


@pytest.mark.slow
def test_no_secret_from_the_environment_is_logged_anywhere(tmp_path, monkeypatch):
    secrets = {name: f"nf-{uuid.uuid4().hex}" for name in SECRET_NAMES}
    store_folder = tmp_path / "store"
    store_folder.mkdir()
    store = Store(store_folder)
    result = store.run("main", env=secrets, models="mlp", epochs=1)
    assert result.returncode == 0, result.stderr

    monkeypatch.chdir(store_folder)  # where relative artifact locations start
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
