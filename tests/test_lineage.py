"""What a run records about the code that made it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from neuroflow.tracking.lineage import PROJECT_ROOT, code_digest, git_state, provenance_tags


def head(root: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_clean_checkout_is_not_dirty(checkout):
    assert git_state(checkout) == (head(checkout), False)


def test_a_stray_file_beside_the_code_is_not_a_change(checkout):
    (checkout / "run.log").write_text("output\n")
    assert git_state(checkout) == (head(checkout), False)


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "neuroflow" / "core.py").write_text("x = 2\n"),
        lambda root: (root / "neuroflow" / "new.py").write_text("y = 1\n"),
        lambda root: (root / "MLproject").write_text("name: other\n"),
    ],
    ids=["edited module", "new module", "edited MLproject"],
)
def test_a_change_to_the_code_is_dirty(checkout, change):
    change(checkout)
    assert git_state(checkout) == (head(checkout), True)


def test_outside_git_there_is_no_commit(tmp_path):
    assert git_state(tmp_path) == (None, False)


def test_provenance_records_versions_and_this_checkouts_commit():
    tags = provenance_tags()
    assert tags["versions.torch"].startswith("2.14.1")
    assert tags["versions.python"].startswith("3.11")
    assert len(tags["git_commit"]) == 40 and tags["git_dirty"] in ("true", "false")
    assert tags["code_digest"] == code_digest(PROJECT_ROOT)
