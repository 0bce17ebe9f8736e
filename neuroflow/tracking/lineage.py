"""Lineage: which data a run used (mlflow.log_input) and which code and libraries produced it."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.dataset_source import DatasetSource

from neuroflow.data.prepared import SPLITS, Prepared
from neuroflow.tracking.secrets import scrub

CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class RunArtifactSource(DatasetSource):
    """A dataset that is a folder logged by an MLflow run, named by its runs:/ URI."""

    def __init__(self, uri: str):
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "mlflow_run_artifact"

    def load(self, dst_path=None) -> str:
        return mlflow.artifacts.download_artifacts(artifact_uri=self.uri, dst_path=dst_path)

    @staticmethod
    def _can_resolve(raw_source) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("runs:/")

    @classmethod
    def _resolve(cls, raw_source) -> RunArtifactSource:
        return cls(raw_source)

    def to_dict(self) -> dict:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict) -> RunArtifactSource:
        return cls(source_dict["uri"])


def log_splits(prepared: Prepared, uri: str) -> dict:
    """Record each split of the prepared dataset at `uri` as an input of the active run.
    Returns the MLflow datasets by split, for metrics measured on one. Only the metadata is
    read: MLflow is given the splits' digests, and arrays of their shapes that hold no data."""
    name = prepared.meta["dataset"]

    def shaped(*shape) -> np.ndarray:  # zero bytes: every element is the same one
        return np.broadcast_to(np.zeros((), np.uint8), shape)

    datasets = []
    for split in SPLITS:
        recorded = prepared.meta["splits"][split]
        datasets.append(
            mlflow.data.from_numpy(
                shaped(recorded["count"], *prepared.pixel_shape),
                targets=shaped(recorded["count"]),
                source=RunArtifactSource(uri),
                name=f"{name}-{split}",
                digest=recorded["digest"],
            )
        )
    mlflow.log_inputs(
        datasets=datasets,
        contexts=[CONTEXTS[s] for s in SPLITS],
        tags_list=[{"split": s} for s in SPLITS],
    )
    return dict(zip(SPLITS, datasets, strict=True))


def provenance_tags() -> dict[str, str]:
    """The digest of the code (what the step cache keys on), the git commit and whether the
    tree had uncommitted changes, and library versions, with secrets masked. The versions are
    read from the installed packages' metadata, so register, which never needs torch, does not
    import it to name its version."""
    from importlib.metadata import version

    tags = {
        "code_digest": code_digest(PROJECT_ROOT),
        "versions.python": platform.python_version(),
        "versions.torch": version("torch"),
        "versions.mlflow": mlflow.__version__,
        "versions.numpy": version("numpy"),
    }
    commit, dirty = git_state(PROJECT_ROOT)
    if commit:
        tags.update({"git_commit": commit, "git_dirty": str(dirty).lower()})
    return scrub(tags)


# What a step runs, as paths and globs under the project root that git and pathlib both read:
# the code, the entry points, and the pins its environment is built from. conda.yaml is in, as
# the MLproject's conda_env, which MLflow builds the environment from with every env manager;
# python_env.yaml is out, as MLflow never reads it for this project and it is generated from
# requirements.txt, which is in. README, tests, notebooks and benchmarks change no step's result.
CODE = ("MLproject", "conda.yaml", "requirements*.txt", "neuroflow", "steps")


def code_digest(root: Path) -> str:
    """sha256 over the relative path and bytes of each file of the code (CODE) at `root`, as
    the files are on disk now: an uncommitted edit is a different code, while a commit that
    touches only the README, tests or notebooks keeps the digest. The same files give the same
    digest in a git checkout and outside git."""
    digest = hashlib.sha256()
    for name in code_files(root):
        data = (root / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def code_files(root: Path) -> list[str]:
    """The files of the code at `root`, as sorted relative POSIX paths: in a git checkout, the
    ones git tracks or would track (ignored ones, such as __pycache__, are not code); outside
    git, e.g. in a project tarball on Databricks, every file but __pycache__'s. A tracked file
    deleted from the tree is not there to run, so it is not listed."""
    command = ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *CODE]
    try:
        listed = subprocess.run(command, cwd=root, capture_output=True, check=True, timeout=30)
        names = [os.fsdecode(name) for name in listed.stdout.split(b"\0")]
    except (OSError, subprocess.SubprocessError):
        relative = (
            path.relative_to(root)
            for pattern in CODE
            for top in root.glob(pattern)
            for path in ([top] if top.is_file() else top.rglob("*"))
        )
        names = [path.as_posix() for path in relative if "__pycache__" not in path.parts]
    return sorted({name for name in names if name and (root / name).is_file()})


def git_state(root: Path) -> tuple[str | None, bool]:
    """(HEAD commit, whether the code that runs has uncommitted changes) of the checkout at
    `root`; (None, False) outside git, e.g. in a project tarball on Databricks. New files count
    only inside the code (CODE): a stray log file beside the project changes no result."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--", *CODE))
    except (OSError, subprocess.SubprocessError):
        return None, False
