"""The step cache: a step is reused when a FINISHED run of the same entry point exists with
the same parameters (defaults included, compared as normalised strings), made by the same code:
its `code_digest` tag (lineage.code_digest) equals the digest of the code about to run. Commits
that touch only the README, tests or notebooks keep the digest, and uncommitted edits to the code
change it. Upstream inputs are parameters too (data run ids, evaluator and model version URIs),
so a changed input is a changed parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import yaml

from neuroflow.tracking.runs import STEP_TAG, find_runs, normalise

PROJECT = Path(__file__).resolve().parents[2]


@cache
def defaults(entry_point: str) -> dict[str, str]:
    """The MLproject defaults of `entry_point`'s parameters."""
    spec = yaml.safe_load((PROJECT / "MLproject").read_text())["entry_points"][entry_point]
    return {name: str(p["default"]) for name, p in spec.get("parameters", {}).items()}


def full_params(entry_point: str, params: dict) -> dict[str, str]:
    return {key: normalise(value) for key, value in {**defaults(entry_point), **params}.items()}


def lookup(
    experiment_id: str,
    entry_point: str,
    params: dict,
    code_digest: str,
    still_valid: Callable | None = None,
):
    """The newest reusable run of `entry_point` made by the code whose digest is `code_digest`,
    or None. `still_valid(run)` may veto a run whose result no longer stands (e.g. a promotion
    the registry has moved on from)."""
    wanted = full_params(entry_point, params)
    where = (
        f"tags.{STEP_TAG} = '{entry_point}' and tags.code_digest = '{code_digest}' "
        "and attributes.status = 'FINISHED'"
    )
    for run in find_runs(experiment_id, where):
        if not wanted.keys() <= run.data.params.keys():
            continue
        logged = {key: normalise(run.data.params[key]) for key in wanted}
        if logged == wanted and (still_valid is None or still_valid(run)):
            return run
    return None
