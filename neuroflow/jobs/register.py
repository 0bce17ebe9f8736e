"""register: put a training run's model in the registry and point `challenger` at it."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from neuroflow.errors import RunLookupError
from neuroflow.families import metric_for
from neuroflow.tracking.card import card_uri, gather, link, log_card
from neuroflow.tracking.digests import DIGEST_TAG, digest_of, log_manifest, record_on_version
from neuroflow.tracking.lineage import provenance_tags
from neuroflow.tracking.models import check_model
from neuroflow.tracking.registry import (
    CHALLENGER,
    best_run,
    default_model_name,
    existing_version,
    full_model_name,
    is_unity_catalog,
    newest_run,
    registry_lock,
    training_run,
)
from neuroflow.tracking.runs import (
    DATASET_TITLE,
    FAMILY_TAG,
    STEP_TAG,
    get_run,
    log_params_once,
    resolve_data,
)

EXPECTED = "a model logged by this project's training"  # for one that is not


def register(
    run_id: str,
    family: str,
    model_name: str,
    metric: str,
    catalog: str = "",
    schema: str = "",
    data: str = "",
):
    """In the active run: register the model of training run `run_id` (or, when empty, of the
    best FINISHED `family` run of the experiment on the same data: `data`'s, or else the data
    of the family's newest run) and move `challenger` to it. Registering a run again returns
    its existing version. Returns the ModelVersion."""
    active = mlflow.active_run()
    mlflow.set_tags({STEP_TAG: "register", **provenance_tags()})
    log_params_once(
        {
            "run_id": run_id,
            "family": family,
            "model_name": model_name,
            "metric": metric,
            "data": data,
            "catalog": catalog,
            "schema": schema,
        }
    )
    if run_id:
        run = training_run(run_id, family)
        family = run.data.tags[FAMILY_TAG]
        judged_by = _metric(family, metric)
    else:
        judged_by = _metric(family, metric)
        experiment = active.info.experiment_id
        digest = _data_digest(data, family, experiment)
        run = training_run(best_run(family, judged_by, experiment, digest).info.run_id)
    data_run = get_run(run.data.params["data_run_id"])
    dataset = data_run.data.tags.get(DATASET_TITLE) or data_run.data.params.get("dataset", "data")
    name = full_model_name(model_name or default_model_name(dataset, family), catalog, schema)
    model_uri = run.data.tags["model_uri"]
    # Before anything is registered: the model is ours, every file of it as training logged
    # it, and the card can be made.
    files, weights_digest = check_model(model_uri, f"run {run.info.run_id}'s model", EXPECTED)
    if is_unity_catalog() and mlflow.models.get_model_info(model_uri).signature is None:
        raise RunLookupError(f"{model_uri} has no signature; Unity Catalog requires one")
    card = gather(run, data_run, model_uri, weights_digest)

    client = MlflowClient()
    # Held so that two registers of one run racing each other make one version, not two.
    with registry_lock(client, name, f"register run {active.info.run_id}"):
        version = existing_version(client, name, run.info.run_id)
        if version is None:
            score = run.data.metrics[judged_by.name]
            # Recorded as the version is created, so no one can record other values first.
            tags = {
                **_version_tags(run, family, dataset),
                judged_by.name: str(score),
                "model_card": card_uri(active),
                **log_manifest(files),
            }
            version = mlflow.register_model(model_uri, name, tags=tags)
            log_card(card, version)
            description = f"{_description(run, family, judged_by, score)}\n\n{link(active)}"
            client.update_model_version(name, version.version, description)
        elif DIGEST_TAG not in version.tags:  # registered before files were digested
            record_on_version(client, version, files)
        elif version.tags[DIGEST_TAG] != digest_of(files):
            raise RunLookupError(
                f"version {version.version} of {name!r} records files with digest "
                f"{version.tags[DIGEST_TAG][:12]}, but run {run.info.run_id}'s model holds "
                f"{digest_of(files)[:12]}; expected the same files (one record was changed)"
            )
        client.set_registered_model_alias(name, CHALLENGER, version.version)
    mlflow.set_tags(
        {
            "registered_model": name,
            "registered_version": str(version.version),
            "source_run": run.info.run_id,
            FAMILY_TAG: family,
        }
    )
    print(f"{name} version {version.version} <- run {run.info.run_id} (alias {CHALLENGER})")
    return client.get_model_version(name, version.version)


def _data_digest(data: str, family: str, experiment_id: str) -> str:
    """The digest of the data to choose a run on: `data`'s, or the family's newest run's."""
    if data:
        ref = resolve_data(data, experiment_id)
        if ref is None:
            raise RunLookupError(f"data {data!r}: experiment {experiment_id} has no preprocess run")
        return ref.digest
    newest = newest_run(family, experiment_id)
    return newest.data.params.get("data_digest", "")


def _metric(family: str, name: str):
    try:
        return metric_for(family, name)
    except ValueError as error:
        raise RunLookupError(str(error)) from None


def _version_tags(run, family: str, dataset: str) -> dict[str, str]:
    tags = {
        "family": family,
        "dataset": dataset,
        "data_digest": run.data.params.get("data_digest", ""),
        "data_run_id": run.data.params.get("data_run_id", ""),
        "source_run": run.info.run_id,
        "git_commit": run.data.tags.get("git_commit", ""),
    }
    if "evaluator_uri" in run.data.params:  # a DCGAN's FID means something only with it
        tags["evaluator_uri"] = run.data.params["evaluator_uri"]
    return tags


def _description(run, family: str, metric, score: float) -> str:
    return (
        f"{family} from run {run.info.run_id} ({run.info.run_name}), trained on data digest "
        f"{run.data.params.get('data_digest', '?')}: {metric.name} = {score:.4f}"
    )
