"""A step as a task of the Databricks job in databricks.yml: its run nests under the job's run
(neuroflow.cli.PARENT_RUN, which neuroflow.platforms.databricks sets), and it hands its results
on to later tasks as task values ({{tasks.<task>.values.<key>}}).

databricks/task.py starts every task and marks its process as one (as_task); anywhere else (a
step under `mlflow run`, a test) none of this happens.
"""

from __future__ import annotations

import os

from neuroflow.cli import AFTER_RUN

# The task values a step's run hands on, and the run tag each one comes from.
HANDED_ON = {"model_name": "registered_model", "version": "registered_version"}


def as_task() -> None:
    """Mark this process, and those it starts (torchrun's), as a job's task: each step's run
    hands on its values once it has finished."""
    os.environ[AFTER_RUN] = f"{__name__}:hand_on"


def hand_on(run_id: str) -> dict[str, str]:
    """Set the task values of the finished run `run_id` (its id, and for register the model
    and version it registered). Returns them."""
    import mlflow
    from databricks.sdk.runtime import dbutils  # the cluster's own dbutils

    tags = mlflow.get_run(run_id).data.tags
    values = {"run_id": run_id}
    values |= {key: tags[tag] for key, tag in HANDED_ON.items() if tag in tags}
    for key, value in values.items():
        dbutils.jobs.taskValues.set(key=key, value=value)
    return values
