"""Lineage: which data a run used (mlflow.log_input) and which code and libraries produced it."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import mlflow
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


def log_splits(prepared: Prepared, uri: str) -> None:
    """Record each split of the prepared dataset at `uri` as an input of the active run."""
    name = prepared.meta["dataset"]
    datasets = [
        mlflow.data.from_numpy(
            prepared.images[split],
            targets=prepared.labels[split],
            source=RunArtifactSource(uri),
            name=f"{name}-{split}",
            digest=prepared.meta["splits"][split]["digest"],
        )
        for split in SPLITS
    ]
    mlflow.log_inputs(
        datasets=datasets,
        contexts=[CONTEXTS[s] for s in SPLITS],
        tags_list=[{"split": s} for s in SPLITS],
    )


def provenance_tags() -> dict[str, str]:
    """The git commit (and whether the tree had uncommitted changes) and library versions,
    with secrets masked."""
    import numpy
    import torch

    tags = {
        "versions.python": platform.python_version(),
        "versions.torch": torch.__version__,
        "versions.mlflow": mlflow.__version__,
        "versions.numpy": numpy.__version__,
    }
    commit, dirty = git_state(PROJECT_ROOT)
    if commit:
        tags.update({"git_commit": commit, "git_dirty": str(dirty).lower()})
    return scrub(tags)


CODE = ("MLproject", "conda.yaml", "python_env.yaml", "requirements.txt", "neuroflow", "steps")


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
