"""promote: re-score challenger and champion with the same code on the same test images, those
neither trained or validated on, and move `champion` when the challenger is strictly better, by
at least min_delta."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient

from neuroflow.data.prepared import Prepared, open_prepared
from neuroflow.data.unseen import unseen_test
from neuroflow.errors import RunLookupError
from neuroflow.families import FID
from neuroflow.settings import PromoteConfig
from neuroflow.tracking.evaluation import evaluate_predictions
from neuroflow.tracking.lineage import provenance_tags
from neuroflow.tracking.models import load_model
from neuroflow.tracking.registry import (
    CHAMPION,
    Decision,
    alias_version,
    decide,
    family_metric,
    full_model_name,
    is_unity_catalog,
    registry_lock,
    resolve_version,
    transition_stage,
)
from neuroflow.tracking.runs import STEP_TAG, log_params_once

LATENT_SEED = 0  # every generator is scored on latents from this seed
EXPECTED = "a model logged by this project's training"  # for one that cannot be loaded


@dataclass(frozen=True)
class Outcome:
    metric: str
    candidate: str  # version numbers
    champion_before: str | None
    candidate_score: float
    champion_score: float | None
    decision: Decision
    dry_run: bool
    test_images: int | None = None  # how many images both were scored on

    @property
    def champion_after(self) -> str | None:
        moved = self.decision.promote and not self.dry_run
        return self.candidate if moved else self.champion_before


def promote(
    model_name: str,
    candidate: str,
    min_delta: float,
    metric: str,
    dry_run: bool,
    stage: str = "",
    *,
    min_unseen: int = PromoteConfig.min_unseen,
    dataset_changed: bool = False,
) -> Outcome:
    """In the active run: decide whether version `candidate` (a number or an alias) of
    `model_name` replaces the champion, log the comparison, and act on it unless dry_run. Both
    are scored on at least `min_unseen` test images neither trained or validated on; a
    champion trained on another dataset is refused unless `dataset_changed`."""
    mlflow.set_tags({STEP_TAG: "promote", **provenance_tags()})
    log_params_once(
        {
            "model_name": model_name,
            "candidate": candidate,
            "min_delta": min_delta,
            "metric": metric,
            "dry_run": str(dry_run).lower(),
            "stage": stage,
            "min_unseen": min_unseen,
            "dataset_changed": str(dataset_changed).lower(),
        }
    )
    model_name = full_model_name(model_name)  # Unity Catalog wants <catalog>.<schema>.<name>
    if stage and is_unity_catalog():
        raise RunLookupError(f"stage {stage!r}: Unity Catalog models have aliases, not stages")
    client = MlflowClient()
    chosen = resolve_version(client, model_name, candidate)
    judged_by = family_metric(chosen, metric)
    judge = Judge(chosen, judged_by, min_delta, dry_run, Fairness(min_unseen, dataset_changed))
    holder = f"promote run {mlflow.active_run().info.run_id}"
    for _ in range(MAX_ROUNDS):
        champion = alias_version(client, model_name, CHAMPION)
        outcome = judge(champion)
        if dry_run or outcome.candidate == outcome.champion_before:
            break
        # Scoring takes seconds and another promote may move the champion meanwhile: act only
        # if it is still the one judged against, so the result is that of some serial order.
        with registry_lock(client, model_name, holder):
            if _number(alias_version(client, model_name, CHAMPION)) == _number(champion):
                _apply(client, chosen, outcome, stage)
                break
    else:
        raise RunLookupError(
            f"the champion of {model_name!r} moved {MAX_ROUNDS} times while version "
            f"{chosen.version} was judged; expected it to settle, try again"
        )
    _log(outcome, model_name)
    return outcome


MAX_ROUNDS = 10  # re-judgings when other promotes move the champion meanwhile


def _number(version) -> str | None:
    return None if version is None else str(version.version)


@dataclass(frozen=True)
class Fairness:
    """What makes a comparison fair: enough unseen test images, and one dataset."""

    min_unseen: int
    dataset_changed: bool


class Judge:
    """Decides whether `chosen` replaces a champion. The images scored on depend on the
    champion's data, so each champion gets a Scorer of its own; each version is scored once
    against each."""

    def __init__(self, chosen, metric, min_delta: float, dry_run: bool, fairness: Fairness):
        self.chosen, self.metric, self.min_delta, self.dry_run = chosen, metric, min_delta, dry_run
        self.fairness = fairness
        self.data: dict[str, Prepared] = {}  # by data run id, each downloaded once
        self.scorers: dict[str | None, Scorer] = {}
        self.scores: dict[tuple[str, str | None], float] = {}

    def scorer(self, champion) -> Scorer:
        key = _number(champion)
        if key not in self.scorers:
            self.scorers[key] = Scorer(self.chosen, champion, self.metric, self.fairness, self.load)
        return self.scorers[key]

    def load(self, version) -> Prepared:
        data_run = version.tags.get("data_run_id", "")
        if data_run not in self.data:  # its test images read when scored, no others
            self.data[data_run] = open_prepared(f"runs:/{data_run}/prepared", stream=True)
        return self.data[data_run]

    def score(self, version, champion) -> float:
        key = (str(version.version), _number(champion))
        if key not in self.scores:
            self.scores[key] = self.scorer(champion)(version)
        return self.scores[key]

    def __call__(self, champion) -> Outcome:
        chosen, name = self.chosen, self.metric.name
        before = _number(champion)
        if before == str(chosen.version):
            score = float(chosen.tags.get(f"rescored_{name}", "nan"))
            decision = Decision(False, f"version {chosen.version} is already the champion")
            return Outcome(name, before, before, score, score, decision, self.dry_run)
        candidate_score = self.score(chosen, champion)
        champion_score = self.score(champion, champion) if champion is not None else None
        decision = decide(self.metric, candidate_score, champion_score, self.min_delta)
        return Outcome(
            name,
            str(chosen.version),
            before,
            candidate_score,
            champion_score,
            decision,
            self.dry_run,
            self.scorer(champion).count,
        )


class Scorer:
    """Scores registered versions on the images a candidate and one champion are compared on:
    a classifier by MLflow's standard evaluation on the test images of both versions' data
    that neither trained or validated on (neuroflow.data.unseen), in a nested run per version
    (its accuracy_score is the score); the DCGAN by FID on the candidate's test split, under
    the candidate's evaluator. torch is imported here, by the first version to be scored: a
    promote that refuses its input or finds the candidate already champion starts and ends
    without it."""

    def __init__(self, candidate, champion, metric, fairness: Fairness, load):
        from neuroflow.training.batches import to_device
        from neuroflow.training.device import resolve_device

        self.metric = metric
        self.device = resolve_device("auto")
        self.data: Prepared = load(candidate)
        held = load(champion) if champion is not None else None
        same = held is None or same_dataset(self.data, held)
        if not same and not fairness.dataset_changed:
            raise RunLookupError(
                f"{candidate.name} version {candidate.version} was trained on "
                f"{describe(self.data)}, its champion version {champion.version} on "
                f"{describe(held)}; expected the same dataset, or dataset_changed=true"
            )
        if metric is FID:
            images, labels = self.data.images["test"], self.data.labels["test"]
        else:
            images, labels = unseen_test(self.data, held, pool_champion=same)
            if held is not None and len(labels) < fairness.min_unseen:
                raise RunLookupError(
                    f"only {len(labels)} test images are unseen by both version "
                    f"{candidate.version} and champion version {champion.version} (neither "
                    f"trained nor validated on them); expected at least min_unseen="
                    f"{fairness.min_unseen}"
                )
        self.count = len(labels)
        self.test = to_device(images, labels, self.device)
        if metric is FID:
            from neuroflow.training.sample_quality import judge

            evaluator = candidate.tags.get("evaluator_uri", "")
            self.evaluator = load_model(evaluator, "evaluator", EXPECTED).to(self.device)
            self.real = judge(self.evaluator, self.test.images)

    def __call__(self, version) -> float:
        import torch

        from neuroflow.training.classifier import probabilities

        uri = f"models:/{version.name}/{version.version}"
        model = load_model(uri, "version", EXPECTED).to(self.device)
        if self.metric is FID:
            from neuroflow.training.sample_quality import SAMPLES, sample, score

            made = tuple(model.generator.shape)  # (C, H, W)
            if made != (self.data.channels, *self.data.image_shape):
                raise RunLookupError(
                    f"{version.name} version {version.version} makes {made} images (C, H, W); "
                    f"the test split has {self.data.pixel_shape}"
                )
            latent_dim = model.config["latent_dim"]
            latents = torch.randn(
                SAMPLES, latent_dim, generator=torch.Generator().manual_seed(LATENT_SEED)
            )
            return score(sample(model, latents.to(self.device)), self.evaluator, self.real)["fid"]
        if tuple(model.standardize.pixel_shape) != self.data.pixel_shape:
            shape = tuple(model.standardize.pixel_shape)
            raise RunLookupError(
                f"{version.name} version {version.version} takes {shape} images; "
                f"the test split has {self.data.pixel_shape}"
            )
        result = evaluate_predictions(
            self.test.labels.cpu().numpy(),
            probabilities(model, self.test.images),
            self.data.classes,
            f"evaluate version {version.version}",
        )
        return result.metrics["accuracy_score"]


def same_dataset(one: Prepared, other: Prepared) -> bool:
    """Whether two prepared datasets are of one dataset: its name and its classes."""
    return (one.title, one.classes) == (other.title, other.classes)


def describe(prepared: Prepared) -> str:
    return f"dataset {prepared.title!r} ({len(prepared.classes)} classes)"


def _apply(client: MlflowClient, version, outcome: Outcome, stage: str) -> None:
    """Act on the decision. A promotion moves the alias first: a user the tracking server does
    not let move `champion` is refused before anything of the version has changed."""
    name, number = version.name, version.version
    if outcome.decision.promote:
        client.set_registered_model_alias(name, CHAMPION, number)
        if stage:
            transition_stage(client, version, stage)
    tags = {
        f"rescored_{outcome.metric}": str(outcome.candidate_score),
        "champion_score": None if outcome.champion_score is None else str(outcome.champion_score),
        "promotion_reason": outcome.decision.reason,
        "promotion": "promoted" if outcome.decision.promote else "rejected",
    }
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(name, number, key, value)


def _log(outcome: Outcome, model_name: str) -> None:
    rows = {
        "role": ["candidate", "champion"],
        "version": [outcome.candidate, outcome.champion_before or ""],
        outcome.metric: [outcome.candidate_score, outcome.champion_score],
    }
    mlflow.log_table(rows, artifact_file="comparison.json")
    verdict = "promoted" if outcome.decision.promote else "kept the champion"
    if outcome.dry_run:
        verdict = f"dry run: would have {verdict}"
    mlflow.set_tags(
        {
            "registered_model": model_name,
            "candidate_version": outcome.candidate,
            "champion_before": outcome.champion_before or "",
            "champion_version": outcome.champion_after or "",
            "decision": verdict,
            "reason": outcome.decision.reason,
        }
    )
    if outcome.test_images is not None:
        mlflow.log_metric("test_images", outcome.test_images)
    mlflow.log_metric(f"candidate_{outcome.metric}", outcome.candidate_score)
    if outcome.champion_score is not None:
        mlflow.log_metric(f"champion_{outcome.metric}", outcome.champion_score)
    print(f"{model_name}: version {outcome.candidate} {verdict}: {outcome.decision.reason}")
