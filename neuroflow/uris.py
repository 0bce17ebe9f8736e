"""The shapes of run ids and runs:/ URIs, checked without importing mlflow."""

from __future__ import annotations

import re

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RUNS_URI = re.compile(r"^runs:/([0-9a-f]{32})/(.+)$")


def check_data_value(value: str) -> str:
    """The `data` option: 'latest', a run id or runs:/<run id>/<path>, the path staying inside
    the run's artifacts. Raises ValueError naming the value otherwise."""
    if match := RUNS_URI.match(value):
        if ".." in re.split(r"[/\\]", match.group(2)):
            raise ValueError(
                f"{value!r} climbs out of the run's artifacts with '..'; expected "
                "runs:/<run id>/<path> with a path inside the run"
            )
        return value
    if value == "latest" or RUN_ID.match(value):
        return value
    raise ValueError(
        f"{value!r} is not 'latest', a 32-character run id or a runs:/<run id>/<path> URI"
    )
