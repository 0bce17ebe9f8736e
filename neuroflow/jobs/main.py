"""main: preprocess, train each family, register and promote, as one tree of runs.

Each step is a child `mlflow.run` of this project's own folder (so a run from a git URI chains
children from the same clone), nested under the main run, or a reused run from the step cache.
Steps pass run ids and model URIs to each other; nothing goes through a guessed local path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import ExecutionException, MlflowException

from neuroflow.data.fingerprint import TAG as FINGERPRINT_TAG
from neuroflow.data.fingerprint import fingerprint
from neuroflow.errors import NeuroflowError
from neuroflow.families import CLASSIFIERS, PRIMARY_METRIC
from neuroflow.settings import PipelineConfig, SourceConfig
from neuroflow.tracking import cache
from neuroflow.tracking.lineage import code_digest, provenance_tags
from neuroflow.tracking.registry import CHAMPION, alias_version
from neuroflow.tracking.runs import STEP_TAG, log_params_once, params_of


@dataclass
class Row:
    """One family's line in the summary."""

    family: str
    train_run: str = ""
    metric: str = ""
    score: float | None = None
    model: str = ""
    version: str = ""
    decision: str = "not promoted"


class Pipeline:
    def __init__(self, config: PipelineConfig):
        self.config = config
        self.client = MlflowClient()
        self.experiment_id = mlflow.active_run().info.experiment_id
        self.code_digest = code_digest(cache.PROJECT)  # of the folder the children run
        self.reused: list[str] = []
        names = {"catalog": config.catalog, "schema": config.schema}
        self.unity_catalog = {key: value for key, value in names.items() if value}

    def step(self, entry_point: str, params: dict, still_valid=None):
        """The run of `entry_point` with `params`: reused from the cache, or run now."""
        params = {key: str(value) for key, value in params.items()}
        if self.config.use_cache:
            run = cache.lookup(
                self.experiment_id, entry_point, params, self.code_digest, still_valid
            )
            if run is not None:
                print(f"{entry_point}: reusing run {run.info.run_id}")
                self.reused.append(f"{entry_point}:{run.info.run_id}")
                return run
        print(f"{entry_point}: running")
        try:
            submitted = mlflow.run(
                str(cache.PROJECT),
                entry_point,
                parameters=params,
                experiment_id=self.experiment_id,
                env_manager=self.config.env_manager,
                synchronous=True,
            )
        except ExecutionException as error:
            raise NeuroflowError(f"step {entry_point} failed: {error}") from None
        return self.client.get_run(submitted.run_id)

    def prepare(self):
        """The preprocess run: reused only when the source's fingerprint (its files' content)
        is the one that run recorded, so changed images re-run it and every step after it."""
        config = self.config
        columns = (config.image_column, config.label_column)
        now = fingerprint(config.dataset, config.data_dir, columns)
        return self.step(
            "preprocess",
            {f.name: getattr(config, f.name) for f in dataclasses.fields(SourceConfig)},
            still_valid=lambda run: now is not None and run.data.tags.get(FINGERPRINT_TAG) == now,
        )

    def train(self, family: str, data_run: str, evaluator: str | None = None, data_digest=""):
        """The run whose model `family` registers: a training run, or with tune_trials a tune
        run, whose default study is this code's on this data (so another code tunes afresh).
        A run is reused only if it trained on data of `data_digest`, when given."""

        def same_data(run) -> bool:
            return not data_digest or run.data.params.get("data_digest") == data_digest

        params = {"data": data_run}
        if self.config.epochs:
            params["epochs"] = self.config.epochs
        if evaluator is not None:
            params["evaluator"] = evaluator
        if self.config.tune_trials and family in CLASSIFIERS:
            tune = {"family": family, "trials": self.config.tune_trials}
            return self.step("tune", {**params, **tune}, same_data)
        return self.step(f"train_{family}", params, same_data)

    def register_and_promote(self, family: str, train_run, row: Row) -> None:
        registered = self.step(
            "register",
            {"run_id": train_run.info.run_id, "family": family, **self.unity_catalog},
            still_valid=self._version_exists,
        )
        row.model = registered.data.tags["registered_model"]
        row.version = registered.data.tags["registered_version"]
        if not self.config.promote:
            return
        champion = alias_version(self.client, row.model, CHAMPION)
        now = str(champion.version) if champion else ""
        reused = f"register:{registered.info.run_id}" in self.reused
        if reused and champion is not None and int(row.version) < int(champion.version):
            # an older configuration run again: its version never takes `champion` back
            row.decision = f"kept champion v{now}: v{row.version} is older and was reused"
            return
        promoted = self.step(
            "promote",
            {
                "model_name": row.model,
                "candidate": row.version,
                "min_unseen": self.config.min_unseen,
            },
            still_valid=lambda run: run.data.tags.get("champion_version", "") == now,
        )
        row.decision = promoted.data.tags["decision"]

    def _version_exists(self, run) -> bool:
        try:
            self.client.get_model_version(
                run.data.tags["registered_model"], run.data.tags["registered_version"]
            )
            return True
        except (KeyError, MlflowException):
            return False


def run_pipeline(config: PipelineConfig) -> list[Row]:
    """In the active run: run the whole pipeline and log summary.md. Returns its rows."""
    mlflow.set_tags({STEP_TAG: "main", **provenance_tags()})
    log_params_once(params_of(config))
    pipeline = Pipeline(config)
    prepared = pipeline.prepare()
    data_run, digest = prepared.info.run_id, prepared.data.tags["data_digest"]
    rows = {family: Row(family) for family in config.models}
    trained = {}
    for family in [f for f in CLASSIFIERS if f in rows]:
        trained[family] = pipeline.train(family, data_run, data_digest=digest)
    for family, run in trained.items():
        pipeline.register_and_promote(family, run, rows[family])
    if "dcgan" in rows:
        judge = _evaluator(pipeline, rows, trained)
        trained["dcgan"] = pipeline.train("dcgan", data_run, judge, data_digest=digest)
        pipeline.register_and_promote("dcgan", trained["dcgan"], rows["dcgan"])
    for family, run in trained.items():
        metric = PRIMARY_METRIC[family].name
        row = rows[family]
        row.train_run, row.metric, row.score = run.info.run_id, metric, run.data.metrics[metric]
    mlflow.set_tag("reused_steps", ",".join(pipeline.reused) or "none")
    summary = markdown_summary(list(rows.values()), pipeline.experiment_id, pipeline.reused)
    mlflow.log_text(summary, "summary.md")
    print(summary)
    return list(rows.values())


def _evaluator(pipeline: Pipeline, rows: dict[str, Row], trained: dict) -> str:
    """The DCGAN's judge: the CNN champion just decided, pinned to its version so the FIDs of
    this run stay comparable; else the CNN just trained; else the DCGAN step's own default."""
    if "cnn" in rows and rows["cnn"].model:
        champion = alias_version(pipeline.client, rows["cnn"].model, CHAMPION)
        if champion is not None:
            return f"models:/{champion.name}/{champion.version}"
    if "cnn" in trained:
        return trained["cnn"].data.tags["model_uri"]
    return ""


def markdown_summary(rows: list[Row], experiment_id: str, reused: list[str]) -> str:
    lines = [
        "| family | training run | metric | registered | decision |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        link = f"[{row.train_run[:8]}](#/experiments/{experiment_id}/runs/{row.train_run})"
        score = f"{row.metric} = {row.score:.4f}" if row.score is not None else ""
        registered = f"{row.model} v{row.version}" if row.version else ""
        lines.append(f"| {row.family} | {link} | {score} | {registered} | {row.decision} |")
    steps = ", ".join(step.split(":")[0] for step in reused) or "none"
    return "\n".join(lines) + f"\n\nReused from the step cache: {steps}\n"
