"""preprocess: read a source, write the prepared folder and log it with its lineage."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from neuroflow.data.fingerprint import TAG as FINGERPRINT_TAG
from neuroflow.data.fingerprint import fingerprint
from neuroflow.data.framing import InputRule
from neuroflow.data.prepared import Prepared, prepare
from neuroflow.data.sources import load_source
from neuroflow.settings import PrepareConfig
from neuroflow.tracking.lineage import log_splits, provenance_tags
from neuroflow.tracking.runs import (
    DATASET_TITLE,
    PREPARED,
    STEP_TAG,
    DataRef,
    log_params_once,
    params_of,
)


def preprocess(config: PrepareConfig) -> DataRef:
    """In the active run: log `prepared/` (see neuroflow.data.prepared) and its three splits
    as inputs, and return where the next step finds it."""
    run_id = mlflow.active_run().info.run_id
    mlflow.set_tags({STEP_TAG: "preprocess", "dataset": config.dataset, **provenance_tags()})
    log_params_once(params_of(config))
    rule = InputRule.for_source(
        config.dataset, config.image_size, config.mnist_framing, fit=config.fit
    )
    columns = (config.image_column, config.label_column)  # a table's
    # pictures read by the rule, in the channels the source resolves
    source = load_source(config.dataset, config.data_dir, rule, columns, config.channels)
    # after the source is open, so a download is part of it; the step cache compares it
    source_fingerprint = fingerprint(config.dataset, config.data_dir, columns)
    mlflow.set_tag(FINGERPRINT_TAG, source_fingerprint)
    uri = f"runs:/{run_id}/{PREPARED}"

    def publish(path: Path) -> None:  # each file logged once written: no whole split on disk
        mlflow.log_artifact(str(path), PREPARED)
        path.unlink()

    with tempfile.TemporaryDirectory() as tmp:
        meta = prepare(source, Path(tmp) / PREPARED, config, source_fingerprint, publish)
    log_splits(Prepared({}, {}, meta), uri)
    counts = {f"{split}_count": info["count"] for split, info in meta["splits"].items()}
    mlflow.log_metrics(counts)
    mlflow.set_tags({"data_digest": meta["digest"], DATASET_TITLE: meta["title"]})
    return DataRef(run_id, uri, meta["digest"])


def preprocess_nested(config: PrepareConfig | None = None) -> DataRef:
    """Prepare `config` (the defaults unless given) in a run nested under the active one."""
    config = config or PrepareConfig()
    with mlflow.start_run(nested=True, run_name="preprocess"):
        return preprocess(config)
