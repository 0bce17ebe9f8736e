"""No secret from the environment or in a URL leaves through MLflow, and runs:/ URIs stay
inside their run. The end-to-end scan of everything a whole pipeline logged is in
test_pipeline.py."""

from __future__ import annotations

import re
import uuid

import mlflow
import pytest

from neuroflow.tracking.lineage import provenance_tags
from neuroflow.tracking.runs import log_params_once
from neuroflow.tracking.secrets import scrub, secret_values
from neuroflow.uris import check_data_value

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


def test_scrub_masks_the_password_of_a_url_the_environment_does_not_hold():
    logged = scrub(
        {
            "storage": "postgresql://team:s3cr3t@db.example.com:5432/optuna",
            "both": "sqlite:///study.db and postgresql+psycopg2://me:p:w@h/db",
            "no_password": "postgresql://team@db.example.com/optuna",
            "not_a_url": "lr:0.1@epoch 3",
        },
        {},
    )
    assert logged == {
        "storage": "postgresql://team:***@db.example.com:5432/optuna",
        "both": "sqlite:///study.db and postgresql+psycopg2://me:***@h/db",
        "no_password": "postgresql://team@db.example.com/optuna",
        "not_a_url": "lr:0.1@epoch 3",
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
