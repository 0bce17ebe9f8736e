"""The project's pins: requirements.txt is the one place versions are pinned, and its
`# python==X.Y.Z` line pins the interpreter. A logged model requires its serving packages at
these versions (neuroflow.tracking.models), and the env files are generated from them
(neuroflow.platforms.envs)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PINS = ROOT / "requirements.txt"

_PYTHON_PIN = re.compile(r"^#\s*python==(\d+\.\d+\.\d+)\s*$")
_PACKAGE_PIN = re.compile(r"^[A-Za-z0-9_.\-\[\]]+==[^\s#]+$")


def read_pins(path: Path = PINS) -> tuple[str, list[str]]:
    """Return (python version, ["package==version", ...]) from a requirements file."""
    python, packages = None, []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if match := _PYTHON_PIN.match(line):
            python = match.group(1)
        elif line and not line.startswith("#"):
            if not _PACKAGE_PIN.match(line):
                raise ValueError(f"{path.name}: {line!r} is not an exact 'name==version' pin")
            packages.append(line)
    if python is None:
        raise ValueError(f"{path.name}: missing the '# python==X.Y.Z' line")
    return python, packages
