"""register and promote in-process against a throwaway store: versions, aliases, decisions."""

from __future__ import annotations

import json
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient

from helpers import copy_of
from neuroflow.errors import RunLookupError
from neuroflow.families import ACCURACY, FID, CNNConfig
from neuroflow.jobs.promote import promote
from neuroflow.jobs.register import register
from neuroflow.jobs.train_classifier import train_classifier
from neuroflow.settings import TrainConfig
from neuroflow.tracking.registry import RECORDED_TAGS, decide

SMALL = CNNConfig(channels=(4, 8), hidden=16)
GOOD = TrainConfig(epochs=4, device="cpu")
BAD = TrainConfig(epochs=1, max_batches=1, lr=1e-5, device="cpu")


@pytest.fixture(scope="module")
def trained_store(prepared_store, tmp_path_factory) -> SimpleNamespace:
    """Made once: prepared_store with a CNN trained well on it (`good`) and one trained for a
    single batch at a tiny lr (`bad`), neither registered. `trained` gives each test a copy."""
    root = tmp_path_factory.mktemp("trained")
    with copy_of(prepared_store.folder, root):
        good, bad = (train(prepared_store.ref, config) for config in (GOOD, BAD))
    return SimpleNamespace(folder=root / "store", data=prepared_store.ref, good=good, bad=bad)


@pytest.fixture
def trained(trained_store, tmp_path) -> SimpleNamespace:
    """This test's own copy of trained_store, as its tracking store."""
    with copy_of(trained_store.folder, tmp_path):
        yield trained_store


def train(prepared, config) -> str:
    with mlflow.start_run() as run:
        train_classifier("cnn", SMALL, config, prepared.run_id)
    return run.info.run_id


def register_run(run_id="", family="", name="", metric=""):
    with mlflow.start_run():
        return register(run_id, family, name, metric)


def promote_version(name="idx_cnn", candidate="challenger", min_delta=0.0, dry_run=False):
    with mlflow.start_run() as run:
        outcome = promote(name, candidate, min_delta, "", dry_run)
    return outcome, mlflow.get_run(run.info.run_id)


def registry_state() -> str:
    """Everything the registry holds, as text to compare before and after."""
    client = MlflowClient()
    state = []
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{model.name}'")
        state.append(
            {
                "name": model.name,
                "aliases": dict(sorted(model.aliases.items())),
                "tags": dict(sorted(model.tags.items())),
                "versions": sorted(
                    (str(v.version), v.run_id, v.description, sorted(v.tags.items()))
                    for v in versions
                ),
            }
        )
    return json.dumps(state, sort_keys=True)


def test_register_tags_the_version_and_moves_challenger(trained):
    run_id = trained.good
    version = register_run(run_id)
    assert (version.name, str(version.version)) == ("idx_cnn", "1")
    tags = version.tags
    assert tags["family"] == "cnn" and tags["source_run"] == run_id
    data = trained.data
    assert tags["data_digest"] == data.digest and tags["data_run_id"] == data.run_id
    accuracy = mlflow.get_run(run_id).data.metrics["test_accuracy"]
    assert float(tags["test_accuracy"]) == accuracy
    assert run_id in version.description and "test_accuracy" in version.description
    assert version.aliases == ["challenger"]
    assert RECORDED_TAGS - {"evaluator_uri"} <= tags.keys()  # all of it, as it was created


def test_a_version_recorded_with_other_files_is_not_registered_again(trained):
    run_id = trained.good
    register_run(run_id)
    MlflowClient().set_model_version_tag("idx_cnn", "1", "model_digest", "0" * 64)
    with pytest.raises(RunLookupError, match="records files with digest 000000000000, but run"):
        register_run(run_id)
    assert MlflowClient().get_model_version("idx_cnn", "1").tags["model_digest"] == "0" * 64


def test_registering_a_run_twice_returns_the_same_version(trained):
    run_id = trained.good
    first, again = register_run(run_id), register_run(run_id)
    assert str(first.version) == str(again.version) == "1"
    assert len(MlflowClient().search_model_versions("name = 'idx_cnn'")) == 1


def test_register_without_a_run_id_picks_the_best_run_of_the_family(trained):
    worse, better = trained.bad, trained.good
    metrics = {r: mlflow.get_run(r).data.metrics["test_accuracy"] for r in (worse, better)}
    assert metrics[better] > metrics[worse]
    assert register_run(family="cnn").run_id == better


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("preprocess run", "is a preprocess run; expected a training run"),
        ("missing run", "does not exist"),
        ("family mismatch", "trained a cnn; expected a rnn"),
        ("metric mismatch", "a cnn is judged by test_accuracy, not 'fid'"),
        ("no runs of family", "has no FINISHED mlp run"),
    ],
)
def test_register_refuses_bad_input_and_leaves_the_registry_alone(trained, case, message):
    run_id = trained.good
    register_run(run_id)
    before = registry_state()
    args = {
        "preprocess run": {"run_id": trained.data.run_id},
        "missing run": {"run_id": "f" * 32},
        "family mismatch": {"run_id": run_id, "family": "rnn"},
        "metric mismatch": {"family": "cnn", "metric": "fid"},
        "no runs of family": {"family": "mlp"},
    }[case]
    with pytest.raises(RunLookupError, match=message):
        register_run(**args)
    assert registry_state() == before


def test_first_promotion_makes_the_candidate_champion(trained):
    register_run(trained.good)
    outcome, run = promote_version()
    assert outcome.decision.promote and outcome.champion_after == "1"
    version = MlflowClient().get_model_version_by_alias("idx_cnn", "champion")
    assert str(version.version) == "1" and version.tags["promotion"] == "promoted"
    assert run.data.tags["decision"] == "promoted"
    table = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/comparison.json")
    assert table["columns"] == ["role", "version", "test_accuracy"]


def test_promote_scores_each_version_with_mlflows_standard_evaluation(
    trained, draws_confusion_matrix
):
    register_run(trained.good)
    promote_version()
    register_run(trained.bad)
    outcome, run = promote_version()
    nested = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", output_format="list"
    )
    by_name = {r.info.run_name: r for r in nested}
    assert set(by_name) == {"evaluate version 2", "evaluate version 1"}
    for number, score in (("2", outcome.candidate_score), ("1", outcome.champion_score)):
        evaluation = by_name[f"evaluate version {number}"]
        metrics = evaluation.data.metrics
        assert metrics["accuracy_score"] == pytest.approx(score)
        for name in ("precision_score", "recall_score", "f1_score", "log_loss", "roc_auc"):
            assert 0 <= metrics[name] < float("inf"), name
        files = {f.path for f in MlflowClient().list_artifacts(evaluation.info.run_id)}
        assert {"per_class_metrics.csv", "confusion_matrix.png"} <= files
        per_class = mlflow.artifacts.load_text(
            f"runs:/{evaluation.info.run_id}/per_class_metrics.csv"
        )
        assert per_class.splitlines()[0].split(",")[:4] == [
            "positive_class",
            "true_negatives",
            "false_positives",
            "false_negatives",
        ]
        assert len(per_class.splitlines()) == 1 + 10  # a row per class
    assert (
        by_name["evaluate version 1"].data.metrics["log_loss"]
        < (by_name["evaluate version 2"].data.metrics["log_loss"])
    )


def test_a_worse_candidate_is_rejected_and_champion_stays(trained):
    register_run(trained.good)
    promote_version()
    register_run(trained.bad)
    outcome, run = promote_version()
    assert not outcome.decision.promote
    assert outcome.candidate_score < outcome.champion_score
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("idx_cnn", "champion").version) == "1"
    rejected = client.get_model_version("idx_cnn", "2")
    assert rejected.tags["promotion"] == "rejected"
    assert float(rejected.tags["champion_score"]) == outcome.champion_score
    assert run.data.tags["decision"] == "kept the champion"


def test_scores_are_recomputed_not_read_from_logged_metrics(trained):
    run_id = trained.good
    register_run(run_id)
    MlflowClient().set_model_version_tag("idx_cnn", "1", "test_accuracy", "0.0")  # a lie
    outcome, _ = promote_version()
    assert outcome.candidate_score == pytest.approx(
        mlflow.get_run(run_id).data.metrics["test_accuracy"], abs=1e-6
    )


def test_min_delta_and_dry_run(trained):
    register_run(trained.bad)
    promote_version()
    register_run(trained.good)
    strict, _ = promote_version(min_delta=1.0)  # no accuracy gain can reach 1.0
    assert not strict.decision.promote
    before = registry_state()
    dry, run = promote_version(candidate="2", dry_run=True)
    assert dry.decision.promote and dry.champion_after == "1"
    assert run.data.tags["decision"] == "dry run: would have promoted"
    assert registry_state() == before


@pytest.mark.parametrize(
    ("name", "candidate", "message"),
    [
        ("nope", "challenger", "registered model 'nope' does not exist"),
        ("idx_cnn", "champion", "has no alias 'champion'"),
        ("idx_cnn", "7", "has no version '7'"),
    ],
)
def test_promote_refuses_what_does_not_exist(trained, name, candidate, message):
    register_run(trained.good)
    before = registry_state()
    with pytest.raises(RunLookupError, match=message):
        promote_version(name, candidate)
    assert registry_state() == before


def test_decide_follows_the_metric_direction():
    assert decide(ACCURACY, 0.9, None, 0.0).promote
    assert decide(ACCURACY, 0.91, 0.90, 0.005).promote
    assert not decide(ACCURACY, 0.904, 0.90, 0.005).promote
    assert decide(FID, 20.0, 30.0, 5.0).promote  # lower FID is better
    assert not decide(FID, 30.0, 20.0, 0.0).promote


@pytest.mark.parametrize("metric", [ACCURACY, FID])
def test_a_tie_keeps_the_champion(metric):
    """'version 2 promoted: test_accuracy 0.8914 beats 0.8914 by 0.0000' was a tie promoted."""
    tie = decide(metric, 0.8914, 0.8914, 0.0)
    assert not tie.promote and "a tie keeps the champion" in tie.reason
    assert not decide(metric, 0.8914, 0.8914, 0.001).promote
