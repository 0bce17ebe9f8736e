"""The model registry: names, versions registered from training runs, and the aliases.

`challenger` marks the newest registered version of a model, `champion` the one in use. Only
aliases are used; stages are deprecated (see transition_stage for registries that still have them).
Every check here runs before anything in the registry is changed, and register and promote make
their changes under the registry lock (registry_lock, at the end), held in the registry itself.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from neuroflow.errors import RunLookupError
from neuroflow.families import FAMILIES, Metric, metric_for
from neuroflow.tracking.digests import DIGEST_TAG, MANIFEST_TAG
from neuroflow.tracking.runs import FAMILY_TAG, NEWEST_FIRST, STEP_TAG, find_runs, get_run

CHAMPION = "champion"
CHALLENGER = "challenger"
# What register records on a version as it creates it: its lineage, its card and the digests
# of its files. On a team's server only a releaser may change them afterwards (neuroflow.server.
# auth), so a version keeps saying where it came from and which files it is.
RECORDED_TAGS = frozenset(
    {"family", "dataset", "data_digest", "data_run_id", "source_run", "git_commit"}
    | {"evaluator_uri", "model_card", DIGEST_TAG, MANIFEST_TAG}
)
UNITY_CATALOG = "databricks-uc"


def default_model_name(dataset: str, family: str) -> str:
    """<dataset>_<family>, e.g. digits_cnn, or mnist_t10k_cnn for an IDX folder named
    mnist-t10k: lower-case letters, digits and underscores only, so it also works as the last
    part of a Unity Catalog name."""
    return re.sub(r"[^a-z0-9]+", "_", f"{dataset}_{family}".lower()).strip("_")


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


def best_run(family: str, metric: Metric, experiment_id: str, data_digest: str):
    """The FINISHED training run of `family` on the data of `data_digest` with the best
    `metric` in the experiment: runs on other data are never compared with it."""
    order = "DESC" if metric.higher_is_better else "ASC"
    where = (
        f"tags.{FAMILY_TAG} = '{family}' and attributes.status = 'FINISHED' "
        f"and metrics.{metric.name} > -1e300 and params.data_digest = '{data_digest}'"
    )
    runs = find_runs(
        experiment_id, where, (f"metrics.{metric.name} {order}", NEWEST_FIRST), max_results=1
    )
    if not runs:
        raise RunLookupError(
            f"experiment {experiment_id} has no FINISHED {family} run with {metric.name} on "
            f"data digest {data_digest}"
        )
    return runs[0]


def newest_run(family: str, experiment_id: str):
    """The newest FINISHED training run of `family` that logged a model."""
    where = f"tags.{FAMILY_TAG} = '{family}' and attributes.status = 'FINISHED'"
    for run in find_runs(experiment_id, where, max_results=50):
        if "model_uri" in run.data.tags:
            return run
    raise RunLookupError(f"experiment {experiment_id} has no FINISHED {family} run with a model")


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
    """Promote when there is no champion, or the candidate beats it strictly, and by at least
    min_delta: the gate is MLflow's model validation, a MetricThreshold checked by
    mlflow.validate_evaluation_results. A tie keeps the champion, so a rerun of an older
    configuration that scores the same cannot move `champion` back."""
    from mlflow.models import EvaluationResult, MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    if champion is None:
        return Decision(True, "there is no champion yet")
    better = metric.higher_is_better
    # MetricThreshold takes a positive min_absolute_change; a gain of at least 0 is a threshold
    gate = (
        MetricThreshold(min_absolute_change=min_delta, greater_is_better=better)
        if min_delta > 0
        else MetricThreshold(threshold=champion, greater_is_better=better)
    )
    gain = metric.gain(candidate, champion)
    if gain <= 0:
        return Decision(
            False,
            f"{metric.name} {candidate:.4f} does not beat the champion's {champion:.4f} "
            f"(gain {gain:.4f}); a tie keeps the champion",
        )
    try:
        mlflow.validate_evaluation_results(
            {metric.name: gate},
            EvaluationResult({metric.name: candidate}, {}),
            EvaluationResult({metric.name: champion}, {}),
        )
        return Decision(True, f"{metric.name} {candidate:.4f} beats {champion:.4f} by {gain:.4f}")
    except ModelValidationFailedException:
        pass
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


# --- the registry lock ---------------------------------------------------------------------
# A mutex held in the model registry itself, so register and promote stay correct when several
# run at once against one tracking server, from any machine.
#
# Creating a registered model is atomic: the name is unique, and a second create fails with
# RESOURCE_ALREADY_EXISTS. The lock on model `name` is a registered model named `name` + SUFFIX
# that lives only while the critical section runs. A lock older than STALE_S (its holder died) is
# broken.
#
# Each acquisition tags its lock with a token of its own. Releasing or breaking a lock deletes it
# only if it still carries the token seen, so a holder whose lock was broken does not release its
# successor's. The registry has no conditional delete, so the check and the delete are two calls:
# a lock taken in the moment between them (after a holder dead for five minutes, by another
# breaker) could still be removed.

SUFFIX = "_lock"
STALE_S = 300.0  # a critical section takes well under a second; five minutes means its holder died
WAIT_S = 600.0  # how long to queue behind other holders before giving up
POLL_S = 0.25


@contextlib.contextmanager
def registry_lock(client: MlflowClient, name: str, holder: str):
    """Hold the lock on registered model `name` for the `with` body."""
    lock = f"{name}{SUFFIX}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + WAIT_S
    while not _acquire(client, lock, holder, token):
        if time.monotonic() > deadline:
            raise RunLookupError(
                f"registry lock {lock!r} stayed held for {WAIT_S:.0f} s; expected it released "
                f"(delete the registered model {lock!r} if its holder is gone)"
            )
        time.sleep(POLL_S)
    try:
        yield
    finally:
        _delete_if_token(client, lock, token)


def _delete_if_token(client: MlflowClient, lock: str, token: str | None) -> None:
    """Delete `lock` if it is still the one tagged `token`; gone already is fine."""
    with contextlib.suppress(MlflowException):
        if client.get_registered_model(lock).tags.get("token") == token:
            client.delete_registered_model(lock)


def _acquire(client: MlflowClient, lock: str, holder: str, token: str) -> bool:
    tags = {"neuroflow.lock": "true", "holder": holder, "token": token}
    try:
        client.create_registered_model(
            lock,
            tags={**tags, "acquired": f"{time.time():.3f}"},
            description=f"held by {holder} while it changes the registry; removed when done",
        )
        return True
    except MlflowException as error:
        # RESOURCE_DOES_NOT_EXIST: the lock was released between MLflow's failed insert and
        # its read-back of the existing model; it is free, so try again.
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with contextlib.suppress(MlflowException):  # gone meanwhile: try again at once
        held = client.get_registered_model(lock)
        # The model and its tags are read apart: a lock released and taken again meanwhile
        # can come back without tags, and must not then look acquired in 1970.
        acquired = float(held.tags.get("acquired", held.creation_timestamp / 1000))
        if time.time() - acquired > STALE_S:
            _delete_if_token(client, lock, held.tags.get("token"))
    return False
