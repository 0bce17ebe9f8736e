"""The notebooks run top to bottom against a store the test fills, reading only from MLflow."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import nbformat
import pytest
from nbclient import NotebookClient

from helpers import ROOT
from neuroflow.jobs.preprocess import preprocess
from neuroflow.settings import PrepareConfig

pytestmark = pytest.mark.slow


def execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def outputs(notebook) -> str:
    return "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def test_explore_data_shows_the_newest_prepared_dataset(tracking, idx_folder):
    with mlflow.start_run():
        ref = preprocess(PrepareConfig(dataset="idx", data_dir=str(idx_folder)))
    notebook = execute("01_explore_data.ipynb", Path(os.getcwd()))
    text = outputs(notebook)
    assert f"run {ref.run_id}: idx" in text
    assert f"digest {ref.digest}" in text
    assert " test:    100 images" in text
    figures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(figures) == 2  # the sample grid and the class balance
