"""Unity Catalog: three-level names, aliases only, and no model without a signature. The
registry is faked at its boundary, the MLflow client calls register and promote make; the
tracking side is a real throwaway store."""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import numpy as np
import pytest

from neuroflow.errors import RunLookupError
from neuroflow.jobs import promote as promote_job
from neuroflow.jobs import register as register_job
from neuroflow.tracking import registry

MUTATIONS = {
    "register_model",
    "set_registered_model_alias",
    "set_model_version_tag",
    "update_model_version",
    "transition_model_version_stage",
}


class FakeRegistry:
    """Records every call; knows no versions until register_model makes one, and keeps the
    registered models created (the registry lock is one) until they are deleted."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.versions: dict[str, SimpleNamespace] = {}
        self.models: dict[str, SimpleNamespace] = {}

    def create_registered_model(self, name, tags=None, description=None):
        self.calls.append(("create_registered_model", name))
        self.models[name] = SimpleNamespace(name=name, tags=dict(tags or {}))
        return self.models[name]

    def get_registered_model(self, name):
        self.calls.append(("get_registered_model", name))
        return self.models[name]

    def delete_registered_model(self, name):
        self.calls.append(("delete_registered_model", name))
        del self.models[name]

    def register_model(self, model_uri, name, tags=None):
        self.calls.append(("register_model", name, model_uri))
        version = SimpleNamespace(name=name, version=1, tags=dict(tags or {}), aliases=[])
        self.versions[name] = version
        return version

    def __getattr__(self, method):
        def call(*args, **kwargs):
            self.calls.append((method, *args))
            if method == "search_model_versions":
                return []
            if method == "get_model_version":
                return self.versions[args[0]]
            return None

        return call

    def mutations(self) -> list[tuple]:
        return [call for call in self.calls if call[0] in MUTATIONS]


@pytest.fixture
def uc(tracking, monkeypatch):
    fake = FakeRegistry()
    monkeypatch.setattr(mlflow, "get_registry_uri", lambda: "databricks-uc")
    monkeypatch.setattr(register_job, "MlflowClient", lambda: fake)
    monkeypatch.setattr(promote_job, "MlflowClient", lambda: fake)
    monkeypatch.setattr(mlflow, "register_model", fake.register_model)
    signed = SimpleNamespace(signature=object())
    monkeypatch.setattr(mlflow.models, "get_model_info", lambda uri: signed)
    return fake


@pytest.fixture
def trained(tracking) -> str:
    """A finished CNN training run, as train_cnn leaves it, minus the training."""
    from neuroflow.families import CNNConfig
    from neuroflow.models.build import build_classifier
    from neuroflow.tracking.models import log_classifier

    with mlflow.start_run() as data_run:
        mlflow.set_tag("step", "preprocess")
        mlflow.log_param("dataset", "digits")
    with mlflow.start_run() as run:
        small = CNNConfig(channels=(4, 8), hidden=16)
        network = build_classifier("cnn", small, (28, 28), 33.0, 78.0, list("0123456789"))
        model_uri = log_classifier(network, np.zeros((2, 28, 28), np.float32)).model_uri
        mlflow.set_tags({"step": "train_cnn", "family": "cnn", "model_uri": model_uri})
        mlflow.log_params({"data_run_id": data_run.info.run_id, "data_digest": "abc"})
        mlflow.log_metric("test_accuracy", 0.98)
    return run.info.run_id


def register(run_id: str, catalog: str = "", schema: str = "", name: str = ""):
    with mlflow.start_run():
        return register_job.register(run_id, "", name, "", catalog, schema)


def test_names_have_three_levels_in_unity_catalog(uc):
    assert registry.full_model_name("digits_cnn", "main", "ml") == "main.ml.digits_cnn"
    assert registry.full_model_name("main.ml.digits_cnn") == "main.ml.digits_cnn"
    with pytest.raises(RunLookupError, match="needs catalog and schema"):
        registry.full_model_name("digits_cnn")


def test_names_stay_plain_in_the_workspace_registry(tracking):
    assert registry.full_model_name("digits_cnn", "main", "ml") == "digits_cnn"


def test_register_uses_the_three_level_name_and_the_challenger_alias(uc, trained):
    register(trained, catalog="main", schema="ml")
    model_uri = mlflow.get_run(trained).data.tags["model_uri"]
    assert ("register_model", "main.ml.digits_cnn", model_uri) in uc.calls
    assert ("set_registered_model_alias", "main.ml.digits_cnn", "challenger", 1) in uc.calls
    assert not any(call[0] == "transition_model_version_stage" for call in uc.calls)
    assert uc.models == {}, "the registry lock was left behind"


def test_register_without_catalog_and_schema_registers_nothing(uc, trained):
    with pytest.raises(RunLookupError, match="needs catalog and schema"):
        register(trained)
    assert uc.mutations() == []


def test_a_model_without_a_signature_is_refused(uc, trained, monkeypatch):
    monkeypatch.setattr(
        mlflow.models, "get_model_info", lambda uri: SimpleNamespace(signature=None)
    )
    with pytest.raises(RunLookupError, match="has no signature; Unity Catalog requires one"):
        register(trained, catalog="main", schema="ml")
    assert uc.mutations() == []


@pytest.mark.parametrize(
    ("name", "stage", "message"),
    [
        ("digits_cnn", "", "needs catalog and schema"),
        ("main.ml.digits_cnn", "Production", "Unity Catalog models have aliases, not stages"),
    ],
)
def test_promote_in_unity_catalog_refuses_plain_names_and_stages(uc, name, stage, message):
    with mlflow.start_run(), pytest.raises(RunLookupError, match=message):
        promote_job.promote(name, "challenger", 0.0, "", False, stage)
    assert uc.mutations() == []


def test_main_passes_catalog_and_schema_to_register(tracking, monkeypatch):
    from neuroflow.jobs import main as main_job
    from neuroflow.settings import PipelineConfig

    asked = []

    def step(self, entry_point, params, still_valid=None):
        asked.append((entry_point, params))
        tags = {"registered_model": "main.ml.digits_cnn", "registered_version": "1"}
        return SimpleNamespace(data=SimpleNamespace(tags=tags))

    monkeypatch.setattr(main_job.Pipeline, "step", step)
    trained = SimpleNamespace(info=SimpleNamespace(run_id="r1"))
    config = PipelineConfig(catalog="main", schema="ml", promote=False)
    with mlflow.start_run():
        main_job.Pipeline(config).register_and_promote("cnn", trained, main_job.Row("cnn"))
        main_job.Pipeline(PipelineConfig(promote=False)).register_and_promote(
            "cnn", trained, main_job.Row("cnn")
        )
    assert asked == [
        ("register", {"run_id": "r1", "family": "cnn", "catalog": "main", "schema": "ml"}),
        ("register", {"run_id": "r1", "family": "cnn"}),
    ]
