"""conda.yaml, python_env.yaml and the Databricks clusters' libraries, from requirements.txt.

requirements.txt is the one place versions are pinned; its `# python==X.Y.Z` line pins the
interpreter. Run `python -m neuroflow.platforms.envs` (or `make envs`) after editing it.
"""

from __future__ import annotations

import json
from pathlib import Path

from neuroflow.tracking.pins import ROOT, read_pins

HEADER = "# Generated from requirements.txt by `make envs`. Edit the pins there, not here.\n"


def conda_yaml(python: str, packages: list[str]) -> str:
    lines = ["name: neuroflow", "channels:", "  - conda-forge", "dependencies:"]
    lines += [f"  - python={python}", "  - pip", "  - pip:"]
    lines += [f"      - {package}" for package in packages]
    return HEADER + "\n".join(lines) + "\n"


def python_env_yaml(python: str, packages: list[str]) -> str:
    lines = [f'python: "{python}"', "build_dependencies:", "  - pip", "dependencies:"]
    lines += [f"  - {package}" for package in packages]
    return HEADER + "\n".join(lines) + "\n"


def cluster_spec(path: Path, packages: list[str]) -> str:
    """A Databricks backend config with its libraries set to the pins. MLflow adds its own
    pinned version to the libraries when it submits, so mlflow is left out here."""
    spec = json.loads(path.read_text())
    spec["libraries"] = [
        {"pypi": {"package": package}} for package in packages if not package.startswith("mlflow==")
    ]
    return json.dumps(spec, indent=2) + "\n"


def expected_files(root: Path = ROOT) -> dict[Path, str]:
    python, packages = read_pins(root / "requirements.txt")
    files = {
        root / "conda.yaml": conda_yaml(python, packages),
        root / "python_env.yaml": python_env_yaml(python, packages),
    }
    for spec in sorted((root / "databricks").glob("cluster-*.json")):
        files[spec] = cluster_spec(spec, packages)
    return files


if __name__ == "__main__":
    for path, text in expected_files().items():
        path.write_text(text)
        print(f"wrote {path.name}")
