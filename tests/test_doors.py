"""Bad options are refused at the door: one line naming the value, a non-zero exit, and no
torch or mlflow imported (so no data read and no model built)."""

from __future__ import annotations

import json
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
    ("preprocess", ["--dataset=idx", "--data-dir=README.md"], "'README.md' is not a folder or an"),
    ("preprocess", ["--dataset=folder", "--data-dir=README.md"], "'README.md' is not a folder;"),
    ("preprocess", ["--dataset=parquet", "--data-dir=README.md"], "'README.md' is not a .parquet"),
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
    ("train_cnn", [f"--data=runs:/{'0' * 32}/../x"], "/../x' climbs out of the run's artifacts"),
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
    ("register", [], "give --run-id, or --family to register its best run"),
    ("register", ["--run-id=abc"], "'abc' is not a 32-character run id"),
    ("register", ["--run-id=" + "a" * 32, "--data=latest"], "expected it only without --run-id"),
    ("register", ["--family=cnn", "--data=lastest"], "'lastest'"),
    ("promote", ["--min-unseen=0"], "'--min-unseen': 0 is not in the range x>=1"),
    ("register", ["--family=no-such-family"], "'no-such-family' is not one of"),
    ("register", ["--family=dcgan", "--metric=test_accuracy"], "a dcgan is judged by fid"),
    ("promote", ["--min-delta=-1"], "-1.0 is not in the range x>=0"),
    ("promote", ["--metric=auc"], "'auc' is not one of"),
    ("promote", ["--dry-run=maybe"], "'maybe' is not a valid boolean"),
    ("main", ["--models=mlp,svm"], "unknown families ['svm']"),
    ("main", ["--models="], "expected a comma-separated list"),
    ("main", ["--models=cnn,cnn"], "names a family twice"),
    ("main", ["--env-manager=docker"], "'docker' is not one of"),
    ("main", ["--epochs=-1"], "-1 is not in the range x>=0"),
    ("main", ["--use-cache=sometimes"], "'sometimes' is not a valid boolean"),
    ("main", ["--dataset=idx", "--data-dir=/no/such/folder"], "'/no/such/folder' is not a"),
    ("main", ["--dataset=folder", "--data-dir=/no/such/folder"], "'/no/such/folder' is not a"),
    ("train_cnn", ["--resume-from=abc"], "'abc' is not a 32-character run id"),
    ("train_rnn", ["--resume=perhaps"], "'perhaps' is not a valid boolean"),
    ("train_dcgan", ["--resume-from=abc"], "'abc' is not a 32-character run id"),
    ("train_dcgan", ["--resume=perhaps"], "'perhaps' is not a valid boolean"),
]


HEAVY = ("torch", "mlflow", "sklearn")

# Runs every row of BAD_OPTIONS in one fresh interpreter, each as its step runs it, and prints
# per row the exit code, what went to stderr and which heavy modules were imported by then.
PROBE = """
import contextlib, importlib, io, json, sys
from neuroflow import cli
results = []
for entry_point, args in json.loads(sys.argv[1]):
    sys.argv, stderr, code = [entry_point, *args], io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        command = getattr(importlib.import_module(f"steps.{entry_point}"), entry_point)
        try:
            cli.run(command)
        except SystemExit as exit:
            code = exit.code
    heavy = sorted(m for m in HEAVY if m in sys.modules)
    results.append({"code": code, "stderr": stderr.getvalue(), "heavy": heavy})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def refusals() -> dict[tuple[str, str], dict]:
    """(entry point, args) -> what the probe saw, for every row, from one process."""
    rows = [(entry_point, args) for entry_point, args, _ in BAD_OPTIONS]
    probe = f"HEAVY = {HEAVY!r}\n{PROBE}"
    result = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(rows)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    seen = json.loads(result.stdout)
    assert len({(entry_point, tuple(args)) for entry_point, args in rows}) == len(rows) == len(seen)
    return {
        (entry_point, " ".join(args)): found
        for (entry_point, args), found in zip(rows, seen, strict=True)
    }


@pytest.mark.parametrize(("entry_point", "args", "message"), BAD_OPTIONS)
def test_bad_option_gets_one_line_before_torch_or_mlflow_is_imported(
    refusals, entry_point, args, message
):
    found = refusals[(entry_point, " ".join(args))]
    assert found["code"] != 0
    lines = found["stderr"].strip().splitlines()
    assert len(lines) == 1, found["stderr"]
    assert lines[0].startswith(f"{entry_point}: error: ")
    assert message in lines[0]
    assert found["heavy"] == []  # refused before any data or model, this row and every one before


def test_help_works_and_exits_zero():
    result = subprocess.run(
        [sys.executable, "-m", "steps.train_cnn", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--channels" in result.stdout and "--max-batches" in result.stdout
