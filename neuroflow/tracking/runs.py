"""Finding runs and what they logged: how steps hand data to each other through MLflow."""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import asdict, dataclass

import mlflow
from mlflow.exceptions import MlflowException

from neuroflow.config import text
from neuroflow.errors import RunLookupError
from neuroflow.tracking.secrets import scrub
from neuroflow.uris import RUNS_URI

STEP_TAG = "step"  # the entry point a run belongs to: preprocess, train_cnn, ...
FAMILY_TAG = "family"
PREPARED = "prepared"  # the artifact folder preprocess logs
DATASET_TITLE = "dataset_title"  # which dataset a preprocess run read: digits, an IDX folder's name


@dataclass(frozen=True)
class DataRef:
    run_id: str
    uri: str  # runs:/<run id>/prepared
    digest: str


def resolve_data(value: str, experiment_id: str) -> DataRef | None:
    """The prepared dataset `value` names. For 'latest' that is the newest FINISHED preprocess
    run of the experiment, or None when it has none."""
    if value == "latest":
        run = latest_run("preprocess", experiment_id)
        if run is None:
            return None
        run_id, path = run.info.run_id, PREPARED
    elif match := RUNS_URI.match(value):
        run_id, path = match.groups()
    else:
        run_id, path = value, PREPARED
    run = get_run(run_id, "a preprocess run for data")
    step = run.data.tags.get(STEP_TAG)
    if step != "preprocess":
        raise RunLookupError(
            f"run {run_id} is a {step or 'untagged'} run; expected a preprocess run for data"
        )
    return DataRef(
        run_id, f"runs:/{run_id}/{path.rstrip('/')}", run.data.tags.get("data_digest", "")
    )


def get_run(run_id: str, expected: str = "a run of this tracking store"):
    """Run `run_id`; when it does not exist, a one-line error saying what was `expected`."""
    try:
        return mlflow.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RunLookupError(
                f"run {run_id} does not exist in {mlflow.get_tracking_uri()}; expected {expected}"
            ) from None
        raise


NEWEST_FIRST = "attributes.start_time DESC"


def find_runs(
    experiment_id: str,
    where: str,
    order_by: tuple[str, ...] = (NEWEST_FIRST,),
    max_results: int = 200,
):
    """The experiment's runs matching the filter `where` (MLflow's search syntax), newest first
    unless `order_by` says otherwise. Every run lookup of the steps is one of these."""
    return mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=where,
        order_by=list(order_by),
        max_results=max_results,
        output_format="list",
    )


def latest_run(step: str, experiment_id: str):
    """The newest FINISHED run of `step`, or None."""
    where = f"tags.{STEP_TAG} = '{step}' and attributes.status = 'FINISHED'"
    runs = find_runs(experiment_id, where, max_results=1)
    return runs[0] if runs else None


def params_of(*configs, **extra) -> dict[str, str]:
    """The fields of config dataclasses, and `extra`, as params: text as the command line
    writes it ('100,50', 'false')."""
    values = {key: value for config in configs for key, value in asdict(config).items()}
    return {key: text(value) for key, value in {**values, **extra}.items()}


def experiment_id() -> str:
    """The active run's experiment."""
    return mlflow.active_run().info.experiment_id


def log_params_once(params: dict) -> None:
    """Log params, skipping those `mlflow run` already logged for this run (MLflow refuses to
    log a param twice with a different string, e.g. '1e-3' then '0.001'). Secrets in the
    values are masked (see neuroflow.tracking.secrets)."""
    run = mlflow.active_run()
    logged = mlflow.get_run(run.info.run_id).data.params
    fresh = scrub({k: v for k, v in params.items() if k not in logged})
    if fresh:
        mlflow.log_params(fresh)


def download(uri: str, dst_path: str) -> str:
    """Download the artifact at `uri` into `dst_path`; a one-line error when it does not exist."""
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path)
    except (MlflowException, OSError) as error:
        raise RunLookupError(f"cannot download {uri}: {str(error).splitlines()[0]}") from None


def normalise(value) -> str:
    """One spelling per value: shell quoting removed (`mlflow run` logs '' for an empty
    string), numbers in Python's float repr ('3e-3' == '0.003', '10' == '10.0'), booleans
    lower case."""
    text = str(value)
    with contextlib.suppress(ValueError):  # unbalanced quotes: keep the text as it is
        text = " ".join(shlex.split(text))
    if text.lower() in ("true", "false"):
        return text.lower()
    try:
        return repr(float(text))
    except ValueError:
        return text
