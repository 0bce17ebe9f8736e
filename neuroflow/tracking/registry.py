"""The model registry: names, versions registered from training runs, and the aliases.

`challenger` marks the newest registered version of a model, `champion` the one in use. Only
aliases are used; stages are deprecated (see transition_stage for registries that still have them).
Every check here runs before anything in the registry is changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from neuroflow.errors import RunLookupError
from neuroflow.families import FAMILIES, Metric, metric_for
from neuroflow.tracking.runs import FAMILY_TAG, STEP_TAG, get_run

CHAMPION = "champion"
CHALLENGER = "challenger"
UNITY_CATALOG = "databricks-uc"


def default_model_name(dataset: str, family: str) -> str:
    """<dataset>_<family>, e.g. digits_cnn; underscores only, so it also works as the last
    part of a Unity Catalog name."""
    return f"{dataset}_{family}".replace("-", "_")


def full_model_name(name: str, catalog: str = "", schema: str = "") -> str:
    """The name to register under: <catalog>.<schema>.<name> in Unity Catalog, else name."""
    if not is_unity_catalog():
        return name
    if name.count(".") == 2:
        return name
    if not (catalog and schema):
        raise RunLookupError(
            f"model {name!r}: the registry is Unity Catalog, which needs catalog and schema "
            "(or a <catalog>.<schema>.<name> model name)"
        )
    return f"{catalog}.{schema}.{name}"


def is_unity_catalog() -> bool:
    return mlflow.get_registry_uri().startswith(UNITY_CATALOG)


def training_run(run_id: str, family: str = ""):
    """The run `run_id`, which must be a finished training run (of `family`, if given)."""
    run = get_run(run_id, "a FINISHED training run")
    trained = run.data.tags.get(FAMILY_TAG)
    step = run.data.tags.get(STEP_TAG, "untagged")
    if trained not in FAMILIES:
        raise RunLookupError(f"run {run_id} is a {step} run; expected a training run with a model")
    if "model_uri" not in run.data.tags:  # it stopped before it logged one
        raise RunLookupError(
            f"run {run_id} is a {run.info.status} {step} run that logged no model; "
            "expected a FINISHED training run with a model"
        )
    if family and trained != family:
        raise RunLookupError(f"run {run_id} trained a {trained}; expected a {family}")
    if run.info.status != "FINISHED":
        raise RunLookupError(f"run {run_id} is {run.info.status}; expected a FINISHED run")
    return run


def best_run(family: str, metric: Metric, experiment_id: str):
    """The FINISHED training run of `family` with the best `metric` in the experiment."""
    order = "DESC" if metric.higher_is_better else "ASC"
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=(
            f"tags.{FAMILY_TAG} = '{family}' and attributes.status = 'FINISHED' "
            f"and metrics.{metric.name} > -1e300"
        ),
        order_by=[f"metrics.{metric.name} {order}", "attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        raise RunLookupError(
            f"experiment {experiment_id} has no FINISHED {family} run with {metric.name}"
        )
    return runs[0]


def existing_version(client: MlflowClient, name: str, run_id: str):
    """The version of `name` already registered from `run_id`, or None."""
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def resolve_version(client: MlflowClient, name: str, candidate: str):
    """Model version `candidate` of `name`: a version number or an alias."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise RunLookupError(f"registered model {name!r} does not exist") from None
    try:
        if candidate.isdigit():
            return client.get_model_version(name, candidate)
        return client.get_model_version_by_alias(name, candidate)
    except MlflowException:
        kind = "version" if candidate.isdigit() else "alias"
        raise RunLookupError(f"model {name!r} has no {kind} {candidate!r}") from None


def alias_version(client: MlflowClient, name: str, alias: str):
    """The version `alias` points at, or None when it is not set."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(metric: Metric, candidate: float, champion: float | None, min_delta: float) -> Decision:
    """Promote when there is no champion, or the candidate beats it by at least min_delta."""
    if champion is None:
        return Decision(True, "there is no champion yet")
    gain = metric.gain(candidate, champion)
    if gain >= min_delta:
        return Decision(True, f"{metric.name} {candidate:.4f} beats {champion:.4f} by {gain:.4f}")
    return Decision(
        False,
        f"{metric.name} {candidate:.4f} does not beat the champion's {champion:.4f} "
        f"by min_delta={min_delta:g} (gain {gain:.4f})",
    )


def family_metric(version, metric_name: str = "") -> Metric:
    """The metric a registered version is judged by, checked against `metric_name`."""
    family = version.tags.get("family")
    if family not in FAMILIES:
        raise RunLookupError(
            f"model {version.name!r} version {version.version} has no family tag; "
            "expected a version registered by the register step"
        )
    try:
        return metric_for(family, metric_name)
    except ValueError as error:
        raise RunLookupError(f"model {version.name!r} version {version.version}: {error}") from None


def transition_stage(client: MlflowClient, version, stage: str) -> None:
    """For registries that still use stages: move `version` to `stage`, archiving the others."""
    client.transition_model_version_stage(
        version.name, version.version, stage, archive_existing_versions=True
    )
