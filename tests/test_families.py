"""A family is declared once: a registration made at runtime is found in every table derived
from the registrations."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT

# Run in a fresh process, as a family module would be: registered before the settings are read.
THROWAWAY = """
import json

from neuroflow.config import Checked, config, setting
from neuroflow.families import ACCURACY, CLASSIFIER, Family, register

@config
class ThrowawayConfig(Checked):
    width: int = setting(8, low=1, help="features of its one layer")

register(Family(
    "throwaway", CLASSIFIER, "collections:OrderedDict", ThrowawayConfig, ACCURACY,
    training={"epochs": 2}, space={"width": [4, 8]},
))

from neuroflow import families, mlproject, settings
from neuroflow.platforms import bundle
from neuroflow.models import build

try:
    bundle.job(bundle.Path("databricks.yml"), "ada@example.com")
    refused = ""
except bundle.BundleError as error:
    refused = error.format_message()
print(json.dumps({
    "families": families.FAMILIES,
    "classifiers": families.CLASSIFIERS,
    "metric": families.PRIMARY_METRIC["throwaway"].name,
    "model": settings.MODELS["throwaway"].__name__,
    "epochs": settings.TRAINING["throwaway"].epochs,
    "space": settings.SPACES["throwaway"]["width"],
    "shared_space": "lr" in settings.SPACES["throwaway"],
    "main_models": settings.PipelineConfig().models,
    "tuned": settings.TuneConfig(family="throwaway").family,
    "registered": settings.RegisterConfig(family="throwaway").family,
    "entry_points": mlproject.entry_points(),
    "network": families.network("throwaway").__name__,
    "bundle": refused,
}))
"""


def test_a_family_registered_at_runtime_is_in_every_table_derived_from_the_registrations():
    done = subprocess.run(
        [sys.executable, "-c", THROWAWAY], cwd=ROOT, capture_output=True, text=True, check=True
    )
    found = json.loads(done.stdout)
    assert "throwaway" in found["families"] and "throwaway" in found["classifiers"]
    assert found["families"] == ["mlp", "cnn", "rnn", "dcgan", "throwaway"]  # built-in ones first
    assert (found["metric"], found["model"]) == ("test_accuracy", "ThrowawayConfig")
    assert (found["epochs"], found["space"], found["shared_space"]) == (2, [4, 8], True)
    assert "throwaway" in found["main_models"]
    assert found["tuned"] == found["registered"] == "throwaway"
    assert "train_throwaway" in found["entry_points"]
    assert found["network"] == "OrderedDict"
    assert (
        "has no task train_throwaway; expected train_, register_ and promote_ tasks for "
        in (found["bundle"])
    )


def test_a_family_is_refused_twice_or_with_a_name_no_entry_point_can_take():
    import pytest

    from neuroflow.families import ACCURACY, CLASSIFIER, Family, MLPConfig, register, registered

    mlp = registered()["mlp"]
    assert register(mlp) is mlp  # the same registration again changes nothing
    with pytest.raises(ValueError, match="family 'mlp' is registered already, otherwise"):
        register(Family("mlp", CLASSIFIER, "x:y", MLPConfig, ACCURACY))
    with pytest.raises(ValueError, match="family name 'no-such family': expected lower-case"):
        register(Family("no-such family", CLASSIFIER, "x:y", MLPConfig, ACCURACY))
