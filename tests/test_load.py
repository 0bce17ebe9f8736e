"""Several steps at once against one tracking server, on sqlite and on PostgreSQL: concurrent
trainings lose no metric point, concurrent registers make one version per run, concurrent
promotes end where some serial order would, and the registry lock leaves nothing behind. The
property test checks the promote loop against a serial simulation of its rule on random score
sequences."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from helpers import MlflowRun, mlflow_run, tracking_server
from neuroflow.tracking.registry import SUFFIX

EPOCHS = 3
PER_EPOCH = ("train_loss", "val_loss", "val_accuracy")
ONCE = ("test_accuracy", "test_loss")
# Each `mlflow run` is one process with one torch thread, so four share two cores fairly.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MODEL = "race_mlp"


@pytest.fixture(scope="module")
def loaded(backend, request, tmp_path_factory):
    """A real `mlflow server` (proxied artifacts) on each backend in turn, with one prepared
    dataset logged to it: the shared sqlite `server`, then one of this module's on PostgreSQL."""
    with contextlib.ExitStack() as stack:
        if backend:
            folder = tmp_path_factory.mktemp("server")
            server = stack.enter_context(tracking_server(folder, backend=backend))
        else:
            server = request.getfixturevalue("server")
        work = tmp_path_factory.mktemp("runs")
        prepared = mlflow_run("preprocess", work, server)
        assert prepared.returncode == 0, prepared.stderr
        client = MlflowClient(server)
        yield SimpleNamespace(uri=server, folder=work, client=client, data_run=prepared.run_id)


@pytest.fixture(scope="module")
def trained(loaded) -> list[str]:
    """Four trainings started at once on the server, by seed: the runs the tests below check,
    register and promote."""
    params = {"data": loaded.data_run, "epochs": EPOCHS}
    runs = at_once(loaded, [("train_mlp", {**params, "seed": seed}) for seed in (1, 2, 3, 4)])
    return [run.run_id for run in runs]


@pytest.fixture
def remote(loaded, monkeypatch):
    """The server, also as this process's tracking URI (artifact downloads resolve
    mlflow-artifacts:/ URIs against it)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", loaded.uri)
    mlflow.set_tracking_uri(loaded.uri)
    yield loaded
    mlflow.set_tracking_uri(None)


def at_once(server, calls: list[tuple[str, dict]]) -> list[MlflowRun]:
    """`mlflow run -e <entry point> -P ...` for every (entry point, params), all started
    together, each in its own process; the results in the order of `calls`."""
    started = time.perf_counter()
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [
            pool.submit(mlflow_run, entry, server.folder, server.uri, env=ONE_THREAD, **params)
            for entry, params in calls
        ]
        results = [future.result() for future in futures]
    print(f"{len(calls)} x {calls[0][0]} at once: {time.perf_counter() - started:.1f} s wall")
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    return results


def overlapped(client: MlflowClient, run_ids: list[str]) -> bool:
    """Whether every run started before any of them ended: they really ran at the same time."""
    infos = [client.get_run(run_id).info for run_id in run_ids]
    return max(i.start_time for i in infos) < min(i.end_time for i in infos)


def serial_promotions(scores: dict[str, float], order, min_delta: float) -> list[str]:
    """The versions promoted, in turn, when `order` is promoted one by one by the rule of
    neuroflow.tracking.registry.decide for a higher-is-better metric (strictly better, by at
    least min_delta); the last is champion."""
    promoted: list[str] = []
    for version in order:
        gain = scores[version] - scores[promoted[-1]] if promoted else 1.0
        if gain > 0 and gain >= min_delta:
            promoted.append(version)
    return promoted


def no_locks(client: MlflowClient) -> list[str]:
    return [m.name for m in client.search_registered_models() if m.name.endswith(SUFFIX)]


@pytest.mark.slow
def test_concurrent_trainings_log_every_metric_point(remote, trained, tmp_path):
    server, run_ids = remote, trained
    client = server.client
    assert len(set(run_ids)) == 4
    assert overlapped(client, run_ids)

    prepared = client.download_artifacts(server.data_run, "prepared", str(tmp_path))
    images = np.load(f"{prepared}/test-images-00000.npy")[:16].astype(np.float32)
    points = 0
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key in PER_EPOCH:
            history = client.get_metric_history(run_id, key)
            assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), key
            points += len(history)
        for key in ONCE:
            assert len(client.get_metric_history(run_id, key)) == 1, key
            points += 1
        predicted = mlflow.pyfunc.load_model(run.data.tags["model_uri"]).predict(images)
        assert np.asarray(predicted).shape == (16,) and set(np.asarray(predicted)) <= set(range(10))
    expected = len(run_ids) * (len(PER_EPOCH) * EPOCHS + len(ONCE))
    infos = [client.get_run(run_id).info for run_id in run_ids]
    wall = (max(i.end_time for i in infos) - min(i.start_time for i in infos)) / 1000
    print(f"{len(run_ids)} runs x {EPOCHS} epochs FINISHED, together in {wall:.0f} s")
    print(f"{points} metric points (expected {expected})")
    assert points == expected


@pytest.mark.slow
def test_concurrent_registers_and_promotes_serialise(remote, trained):
    server = remote
    client = server.client
    a, b, c = trained[:3]

    registers = at_once(
        server, [("register", {"run_id": run, "model_name": MODEL}) for run in (a, a, b, c)]
    )
    versions = client.search_model_versions(f"name = '{MODEL}'")
    print(f"{len(registers)} registers at once -> {len(versions)} versions")
    assert sorted(v.run_id for v in versions) == sorted((a, b, c))  # one version per run
    numbers = [client.get_run(r.run_id).data.tags["registered_version"] for r in registers]
    assert numbers[0] == numbers[1] and len(set(numbers)) == 3
    assert no_locks(client) == []

    numbers = sorted(str(v.version) for v in versions)
    promotes = at_once(
        server, [("promote", {"model_name": MODEL, "candidate": n}) for n in numbers]
    )
    print(f"promotes overlapped: {overlapped(client, [p.run_id for p in promotes])}")
    versions = {n: client.get_model_version(MODEL, n) for n in numbers}
    scores = {n: float(v.tags["rescored_test_accuracy"]) for n, v in versions.items()}
    for version in versions.values():  # re-scored on the same split: the run's own number
        logged = client.get_run(version.run_id).data.metrics["test_accuracy"]
        assert scores[str(version.version)] == pytest.approx(logged, abs=1e-6)
    orders = itertools.permutations(numbers)
    serial = {serial_promotions(scores, order, 0.0)[-1] for order in orders}
    champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    print(f"scores {scores}; champion {champion}; serial outcomes {sorted(serial)}")
    assert champion in serial
    assert versions[champion].tags["promotion"] == "promoted"
    rejected = [n for n, v in versions.items() if v.tags["promotion"] == "rejected"]
    assert champion not in rejected

    # Each promote acted on the champion it found under the lock, so the promotions chain up
    # from "no champion" to the final one, and each rejection lost to a champion of that chain.
    moves, losses = {}, []
    for promote in promotes:
        tags = client.get_run(promote.run_id).data.tags
        if tags["decision"] == "promoted":
            moves[tags["champion_before"]] = tags["candidate_version"]
        else:
            losses.append((tags["candidate_version"], tags["champion_before"]))
    chain = [""]
    while chain[-1] in moves:
        chain.append(moves[chain[-1]])
    print(f"promotions: {' -> '.join(chain[1:])}; rejected (candidate, champion): {losses}")
    assert len(chain) == len(moves) + 1 and chain[-1] == champion
    assert all(against in chain[1:] and scores[n] < scores[against] for n, against in losses)
    assert no_locks(client) == []


class FakeScorer:
    """Stands in for promote's Scorer: a version's score comes from SCORES."""

    count = None  # no images: the scores are given

    def __init__(self, candidate, champion, metric, fairness, load):
        pass

    def __call__(self, version) -> float:
        return SCORES[(version.name, str(version.version))]


SCORES: dict[tuple[str, str], float] = {}
NAMES = itertools.count()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sequence=st.lists(st.floats(0, 1), min_size=1, max_size=6),
    min_delta=st.sampled_from((0.0, 0.01, 0.05)),
)
def test_promoting_one_by_one_keeps_the_best_champion(
    tracking, tmp_path, monkeypatch, sequence, min_delta
):
    from neuroflow.jobs.promote import promote

    monkeypatch.setattr("neuroflow.jobs.promote.Scorer", FakeScorer)
    client, name = MlflowClient(), f"prop_{next(NAMES)}"
    client.create_registered_model(name)
    scores: dict[str, float] = {}
    for score in sequence:
        tags = {"family": "mlp", "data_run_id": "x"}
        version = str(client.create_model_version(name, str(tmp_path), tags=tags).version)
        scores[version] = SCORES[(name, version)] = score
        with mlflow.start_run():
            promote(name, version, min_delta, "", False)

        champion = str(client.get_model_version_by_alias(name, "champion").version)
        promoted = serial_promotions(scores, scores, min_delta)
        assert champion == promoted[-1]
        verdicts = {v: client.get_model_version(name, v).tags["promotion"] for v in scores}
        assert verdicts == {v: "promoted" if v in promoted else "rejected" for v in scores}
        for seen in scores:  # rejected ones lose by min_delta, dethroned ones are no better
            gain = scores[seen] - scores[champion]
            assert seen == champion or gain < min_delta or gain <= 0
    assert no_locks(client) == []


def test_the_registry_lock_holds_under_contention(tracking, monkeypatch):
    """Threads take the lock on one model in turn, as fast as they can: never two inside, no
    holder's lock broken as stale, no one failing on a lock released while it looked at it,
    and no lock left behind."""
    from neuroflow.tracking import registry as locks

    monkeypatch.setattr(locks, "POLL_S", 0.001)
    workers, rounds = 4, 15
    guard, inside, most, entered = threading.Lock(), [0], [0], [0]
    lock = f"contended{SUFFIX}"

    def work(index: int) -> None:
        client = MlflowClient()
        for _ in range(rounds):
            with locks.registry_lock(client, "contended", f"worker {index}"):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                # Nobody broke it meanwhile, taking it for the lock of a holder long dead.
                assert client.get_registered_model(lock).tags.get("holder") == f"worker {index}"
                with guard:
                    inside[0] -= 1
                    entered[0] += 1

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(work, index) for index in range(workers)]:
            future.result()
    assert (most[0], entered[0]) == (1, workers * rounds)
    assert no_locks(MlflowClient()) == []


def test_a_stale_lock_is_broken_and_a_broken_holder_leaves_its_successor_alone(tracking):
    from neuroflow.tracking import registry as locks

    client, lock = MlflowClient(), f"shared{SUFFIX}"
    long_ago = f"{time.time() - locks.STALE_S - 1:.3f}"
    client.create_registered_model(lock, tags={"holder": "dead", "acquired": long_ago})
    with locks.registry_lock(client, "shared", "slow holder"):  # breaks the dead one's
        assert client.get_registered_model(lock).tags["holder"] == "slow holder"
        # Taken for dead too, its lock is broken and taken by a successor meanwhile.
        client.delete_registered_model(lock)
        client.create_registered_model(lock, tags={"holder": "successor", "token": "theirs"})
    assert client.get_registered_model(lock).tags["holder"] == "successor"
