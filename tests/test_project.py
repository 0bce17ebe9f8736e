"""The project's contracts with its users: MLproject, click options, env files, front door."""

from __future__ import annotations

import importlib
import re
import subprocess

import click
import pytest
import yaml

from helpers import ROOT, project_snapshot
from neuroflow.families import FAMILIES
from neuroflow.mlproject import entry_points, render
from neuroflow.platforms.envs import expected_files
from neuroflow.tracking.pins import read_pins

ENTRY_POINTS = entry_points()
MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())
CLICK_TYPES = {
    "int": click.types.IntParamType,
    "float": click.types.FloatParamType,
    "string": (click.types.StringParamType, click.Choice, click.types.BoolParamType),
}


def command_of(entry_point: str) -> click.Command:
    return getattr(importlib.import_module(f"steps.{entry_point}"), entry_point)


def test_every_entry_point_is_declared_with_its_step_module():
    assert list(MLPROJECT["entry_points"]) == ENTRY_POINTS
    for name, spec in MLPROJECT["entry_points"].items():
        assert spec["command"].startswith(f"python -m steps.{name}")
        assert isinstance(command_of(name), click.Command)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_parameters_agree_with_click_options(entry_point):
    spec = MLPROJECT["entry_points"][entry_point]
    parameters = spec.get("parameters", {})
    options = {param.name: param for param in command_of(entry_point).params}
    assert set(parameters) == set(options)
    for name, parameter in parameters.items():
        option = options[name]
        assert set(parameter) == {"type", "default"}, name
        assert isinstance(option.type, CLICK_TYPES[parameter["type"]]), name
        assert option.default == parameter["default"], name
        flag = f"--{name.replace('_', '-')}={{{name}}}"
        assert flag in spec["command"].split(), f"{entry_point} command lacks {flag}"


def test_mlproject_is_generated_from_the_settings():
    assert (ROOT / "MLproject").read_text() == render(), "MLproject is stale: run `make mlproject`"


def test_every_family_has_a_training_entry_point_and_a_databricks_job_that_runs_it():
    assert {f"train_{family}" for family in FAMILIES} <= set(ENTRY_POINTS)
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    (job,) = bundle["resources"]["jobs"].values()
    tasks = {task["task_key"] for task in job["tasks"]}
    steps = ("train", "register", "promote")
    assert tasks == {"preprocess"} | {f"{step}_{family}" for family in FAMILIES for step in steps}


def test_env_files_are_generated_from_the_pins():
    for path, text in expected_files().items():
        assert path.read_text() == text, f"{path.name} is stale: run `make envs`"


def test_env_files_describe_one_environment():
    python, pins = read_pins()
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    python_env = yaml.safe_load((ROOT / "python_env.yaml").read_text())
    conda_pip = next(dep["pip"] for dep in conda["dependencies"] if isinstance(dep, dict))
    assert f"python={python}" in conda["dependencies"]
    assert python_env["python"] == python
    assert conda_pip == python_env["dependencies"] == pins
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(pins)
    assert any(re.fullmatch(r"mlflow==3\.\d+\.\d+", pin) for pin in pins)


def test_readme_opens_with_the_two_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    assert commands and commands[0].split() == ["make", "run"]
    assert commands[1].split() == ["make", "test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_what_runs_leave_in_the_project_stays_out_of_git(tmp_path):
    project = project_snapshot(tmp_path)
    leftovers = [
        "mlflow.db",
        "mlruns/0/meta.yaml",
        "mlartifacts/0/x",
        ".venv/bin/python",
        "steps/__pycache__/main.cpython-311.pyc",
        ".pytest_cache/v/cache",
    ]
    for name in leftovers:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("left by a run")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""
