"""Each setting is declared once (neuroflow.settings): the configs check their own values, with
the words the command line uses for the same value, and every step's options come from them."""

from __future__ import annotations

import importlib

import click
import pytest

from neuroflow import cli
from neuroflow.config import kind, settings
from neuroflow.errors import ConfigError
from neuroflow.families import CNNConfig, DCGANConfig, MLPConfig, RNNConfig
from neuroflow.settings import (
    MODELS,
    TRAINING,
    GANTrainConfig,
    Inputs,
    PipelineConfig,
    PrepareConfig,
    PromoteConfig,
    RegisterConfig,
    TrainConfig,
)

STEPS = {
    "preprocess": (PrepareConfig,),
    "train_mlp": (Inputs, TrainConfig, MLPConfig),
    "train_cnn": (Inputs, TrainConfig, CNNConfig),
    "train_rnn": (Inputs, TrainConfig, RNNConfig),
    "train_dcgan": (GANTrainConfig, DCGANConfig),  # and GANInputs
    "register": (RegisterConfig,),
    "promote": (PromoteConfig,),
    "main": (PipelineConfig,),
}


def test_a_library_call_out_of_range_names_the_field_and_its_range():
    with pytest.raises(ConfigError) as refused:
        TrainConfig(lr=-1)
    assert str(refused.value) == "TrainConfig.lr: -1.0 is not in the range x>0."
    assert isinstance(refused.value, ValueError)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainConfig(epochs=0), "TrainConfig.epochs: 0 is not in the range x>=1"),
        (lambda: TrainConfig(epochs=2.5), "TrainConfig.epochs: '2.5' is not a valid integer"),
        (lambda: TrainConfig(nproc=65), "TrainConfig.nproc: 65 is not in the range 1<=x<=64"),
        (lambda: GANTrainConfig(batch_size=1), "GANTrainConfig.batch_size: 1 is not in the range"),
        (lambda: PrepareConfig(val_fraction=1.5), "1.5 is not in the range 0<x<1"),
        (lambda: MLPConfig(hidden=(100, -5)), "'100,-5' is not a comma-separated list of"),
        (lambda: CNNConfig(hidden=0), "CNNConfig.hidden: 0 is not in the range x>=1"),
        (lambda: DCGANConfig(width=0), "DCGANConfig.width: 0 is not in the range x>=1"),
        (lambda: RNNConfig(cell="transformer"), "'transformer' is not one of 'lstm', 'gru'"),
        (lambda: RNNConfig(bidirectional="maybe"), "'maybe' is not a valid boolean"),
        (lambda: Inputs(data="my-run"), "Inputs.data: 'my-run' is not 'latest'"),
        (lambda: Inputs(resume_from="abc"), "'abc' is not a 32-character run id"),
        (
            lambda: RegisterConfig(family="no-such-family"),
            "'no-such-family' is not one of '', 'mlp'",
        ),
        (lambda: PromoteConfig(min_delta=-1), "PromoteConfig.min_delta: -1.0 is not in the range"),
        (lambda: PipelineConfig(models=("mlp", "svm")), "names unknown families ['svm']"),
        (lambda: PipelineConfig(models=("cnn", "cnn")), "'cnn,cnn' names a family twice"),
        (
            lambda: PrepareConfig(val_fraction=0.5, test_fraction=0.6),
            "PrepareConfig.val_fraction / test_fraction: val_fraction + test_fraction = 1.1; "
            "expected less than 1",
        ),
        (
            lambda: RegisterConfig(family="dcgan", metric="test_accuracy"),
            "RegisterConfig.metric: a dcgan is judged by fid, not 'test_accuracy'",
        ),
    ],
)
def test_every_config_checks_its_values_in_one_line(make, message):
    with pytest.raises(ConfigError) as refused:
        make()
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def out_of_range(field, declared):
    """A value the setting refuses, or None when nothing is out of its range (a free string)."""
    if declared.choices and kind(field) == "str":
        return "no-such-choice"
    if declared.low is not None:
        return declared.low - 1 if kind(field) == "int" else declared.low - 0.5
    if declared.high is not None:
        return declared.high + 1
    if kind(field) == "bool":
        return "maybe"
    if kind(field).startswith("tuple"):
        return "0" if "int" in kind(field) else "nothing"
    return "not/a/value" if declared.check else None


CASES = [
    pytest.param(step, config, field, declared, id=f"{step}:{field.name}")
    for step, configs in STEPS.items()
    for config in configs
    for field, declared in settings(config)
    if declared.option and out_of_range(field, declared) is not None
]


@pytest.mark.parametrize(("step", "config", "field", "declared"), CASES)
def test_the_library_and_the_command_line_refuse_a_value_with_the_same_words(
    step, config, field, declared
):
    bad = out_of_range(field, declared)
    with pytest.raises(ConfigError) as library:
        config(**{field.name: bad})
    command = getattr(importlib.import_module(f"steps.{step}"), step)
    with pytest.raises(click.BadParameter) as command_line:
        command.make_context(step, [f"{cli.flag(field.name)}={bad}"])
    assert library.value.problem == command_line.value.message
    assert library.value.fields == (field.name,)


def test_every_option_of_every_step_is_a_declared_setting():
    for step, configs in STEPS.items():
        command = getattr(importlib.import_module(f"steps.{step}"), step)
        declared = {f.name for config in configs for f, s in settings(config) if s.option}
        options = {param.name for param in command.params}
        if step == "train_dcgan":
            options -= {"data", "evaluator", "resume_from", "resume"}  # GANInputs
        assert options == declared, step


def test_the_defaults_are_the_configs_defaults():
    assert TrainConfig().lr == 3e-3 and GANTrainConfig().lr == 1.6e-3
    assert TRAINING["rnn"].batch_size == 64 and TRAINING["rnn"].grad_clip == 1.0
    command = importlib.import_module("steps.train_rnn").train_rnn
    defaults = command.make_context("train_rnn", []).params
    assert defaults["batch_size"] == 64 and defaults["grad_clip"] == 1.0
    assert set(MODELS) == {"mlp", "cnn", "rnn", "dcgan"}


def test_values_as_the_command_line_gives_them_are_converted():
    assert TrainConfig(epochs="3", lr="3e-3").epochs == 3
    assert MLPConfig(hidden="100,50").hidden == (100, 50)
    assert MLPConfig(hidden=[64]).hidden == (64,)  # as a logged model's config stores it
    assert RNNConfig(bidirectional="true").bidirectional is True
    assert PipelineConfig(models="mlp,cnn").models == ("mlp", "cnn")
