"""Bad options are refused at the door: one line naming the value, a non-zero exit, and no
torch or mlflow imported (so no data read and no model built)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT

BAD_OPTIONS = [
    ("preprocess", ["--dataset=cifar"], "'cifar' is not one of"),
    ("preprocess", ["--val-fraction=1.5"], "1.5 is not in the range"),
    ("preprocess", ["--test-fraction=0"], "0.0 is not in the range"),
    ("preprocess", ["--val-fraction=0.5", "--test-fraction=0.6"], "val_fraction + test_fraction"),
    ("preprocess", ["--dataset=idx", "--data-dir=/no/such/folder"], "'/no/such/folder' is not a"),
    ("preprocess", ["--image-size=abc"], "'abc' is not a valid integer"),
    ("preprocess", ["--seed=-3"], "-3 is not in the range"),
    ("train_cnn", ["--epochs=-1"], "-1 is not in the range"),
    ("train_cnn", ["--epochs=0"], "0 is not in the range"),
    ("train_cnn", ["--lr=abc"], "'abc' is not a valid float"),
    ("train_cnn", ["--lr=0"], "0.0 is not in the range"),
    ("train_cnn", ["--batch-size=2.5"], "'2.5' is not a valid integer"),
    ("train_cnn", ["--optimizer=rmsprop"], "'rmsprop' is not one of"),
    ("train_cnn", ["--device=tpu"], "'tpu' is not one of"),
    ("train_cnn", ["--dropout=1"], "1.0 is not in the range"),
    ("train_cnn", ["--channels=32,,64"], "'32,,64' is not a comma-separated list"),
    ("train_cnn", ["--data=my-run"], "'my-run' is not 'latest'"),
    ("train_mlp", ["--hidden=100,-5"], "'100,-5' is not a comma-separated list"),
    ("train_mlp", ["--max-batches=-1"], "-1 is not in the range"),
    ("train_mlp", ["--patience=x"], "'x' is not a valid integer"),
    ("train_mlp", ["--grad-clip=-1"], "-1.0 is not in the range"),
    ("train_rnn", ["--cell=transformer"], "'transformer' is not one of"),
    ("train_rnn", ["--hidden-size=0"], "0 is not in the range"),
    ("train_rnn", ["--num-layers=-2"], "-2 is not in the range"),
    ("train_rnn", ["--bidirectional=maybe"], "'maybe' is not a valid boolean"),
    ("train_dcgan", ["--loss=hinge"], "'hinge' is not one of"),
    ("train_dcgan", ["--latent-dim=0"], "0 is not in the range x>=1"),
    ("train_dcgan", ["--latent-dim=-4"], "-4 is not in the range x>=1"),
    ("train_dcgan", ["--upsample=bilinear"], "'bilinear' is not one of"),
    ("train_dcgan", ["--beta1=1"], "1.0 is not in the range"),
    ("train_dcgan", ["--n-critic=0"], "0 is not in the range"),
    ("train_dcgan", ["--batch-size=1"], "1 is not in the range x>=2"),
]


def run_step(entry_point: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"steps.{entry_point}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("entry_point", "args", "message"), BAD_OPTIONS)
def test_bad_option_gets_one_line(entry_point, args, message):
    result = run_step(entry_point, *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{entry_point}: error: ")
    assert message in lines[0]


@pytest.mark.parametrize(
    "entry_point", ["preprocess", "train_mlp", "train_cnn", "train_rnn", "train_dcgan"]
)
def test_refusal_happens_before_torch_or_mlflow_is_imported(entry_point):
    probe = (
        "import sys, click\n"
        f"from steps.{entry_point} import {entry_point} as command\n"
        "try:\n"
        "    command.main(['--seed=-1'], standalone_mode=False)\n"
        "except click.BadParameter:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'sklearn') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("entry_point", ["register", "promote", "main"])
def test_entry_points_still_to_come_say_so(entry_point):
    result = run_step(entry_point)
    assert result.returncode != 0
    assert result.stderr.strip() == f"{entry_point}: error: {entry_point} is not implemented yet"


def test_help_works_and_exits_zero():
    result = run_step("train_cnn", "--help")
    assert result.returncode == 0
    assert "--channels" in result.stdout and "--max-batches" in result.stdout
