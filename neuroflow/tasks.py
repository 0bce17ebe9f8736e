"""A step as a task of the Databricks job in databricks.yml: its run nests under the job's run,
and it hands its results on to later tasks as task values ({{tasks.<task>.values.<key>}}).

databricks/task.py starts every task and marks its process as one (TASK); anywhere else (a
step under `mlflow run`, a test) this does nothing.
"""

from __future__ import annotations

import os

TASK = "NEUROFLOW_JOB_TASK"
PARENT_RUN = "NEUROFLOW_PARENT_RUN_ID"  # the job's run, which python -m neuroflow.databricks opens
# The task values a step's run hands on, and the run tag each one comes from.
HANDED_ON = {"model_name": "registered_model", "version": "registered_version"}


def parent_run_id() -> str | None:
    return os.environ.get(PARENT_RUN) or None


def hand_on(run_id: str) -> dict[str, str]:
    """In a job task: set the task values of the finished run `run_id` (its id, and for
    register the model and version it registered). Returns them."""
    if not os.environ.get(TASK):
        return {}
    import mlflow
    from databricks.sdk.runtime import dbutils  # the cluster's own dbutils

    tags = mlflow.get_run(run_id).data.tags
    values = {"run_id": run_id}
    values |= {key: tags[tag] for key, tag in HANDED_ON.items() if tag in tags}
    for key, value in values.items():
        dbutils.jobs.taskValues.set(key=key, value=value)
    return values
