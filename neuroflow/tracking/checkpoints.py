"""Checkpoints in MLflow: each epoch's, uploaded as checkpoints/last.pt of the active run, and
the one to resume from (the run named by resume_from, or found by resume=true). What a
checkpoint holds is neuroflow.training.checkpoint's.

A resumed run is a new run. It starts from the old run's last checkpoint, trains on the old
run's data, carries the old run's per-epoch metrics (those logged at step >= 1) up to that
epoch, and is tagged resumed_from.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, RunStatus

from neuroflow.errors import RunLookupError
from neuroflow.tracking.runs import (
    STEP_TAG,
    download,
    experiment_id,
    find_runs,
    get_run,
    normalise,
    resolve_data,
)
from neuroflow.training import checkpoint

FOLDER, FILE = "checkpoints", "last.pt"
RESUMABLE = ("FAILED", "KILLED")
BATCH = 1000  # metrics per log_batch call, MLflow's limit
MAY_DIFFER = frozenset({"device", "nproc"})  # where it runs, not what it computes


@dataclass(frozen=True)
class Resume:
    run_id: str = ""  # resume this run
    newest: bool = False  # resume the newest FAILED or KILLED run with the same parameters


@dataclass(frozen=True)
class Start:
    run_id: str
    params: dict[str, str]  # the old run's, data_uri among them
    state: dict  # its last checkpoint
    curves: list[dict[str, float]]  # its per-epoch metrics, one dict per epoch up to the state's


class Uploader:
    """Checkpoints.save for fit(): copies the state to the CPU, then writes it and logs it as
    checkpoints/last.pt of the active run from a background thread, so training waits neither
    on torch.save nor on the upload (a few MB per epoch, slow to a remote server). close()
    waits for the uploads still under way."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="neuroflow-checkpoints-"))
        self.run_id = mlflow.active_run().info.run_id
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending: list[Future] = []

    def save(self, state: dict) -> None:
        epoch_folder = self.folder / f"epoch-{state['epoch']}"  # one file per upload in flight
        epoch_folder.mkdir()
        snapshot = checkpoint.copied(state)
        for upload in [f for f in self.pending if f.done()]:
            upload.result()  # an upload that failed stops training here
        self.pending = [f for f in self.pending if not f.done()]
        self.pending.append(self.pool.submit(self._write, snapshot, epoch_folder / FILE))

    def _write(self, state: dict, path: Path) -> None:
        self._upload(checkpoint.save(state, path))

    def _upload(self, path: Path) -> None:
        MlflowClient().log_artifact(self.run_id, str(path), FOLDER)
        shutil.rmtree(path.parent, ignore_errors=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        for upload in self.pending:
            upload.result()  # raises what an upload raised

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """close(); when training already failed, an upload's error is printed, not raised,
        so it does not hide training's."""
        if error is None:
            self.close()
            return
        try:
            self.close()
        except Exception as upload_error:  # reported; training's error goes on
            print(f"checkpoint upload failed too: {upload_error}", file=sys.stderr)


def find_start(request: Resume, step: str, params: dict[str, str]) -> Start | None:
    """The checkpoint to start from, or None to train from scratch. resume=true looks for a
    run on the data params["data"] resolves to now (its digest), not on the same text: after
    `data=latest` has moved to other data, a run on the old data is not resumed."""
    if not (request.run_id or request.newest):
        return None
    wanted = {key: normalise(value) for key, value in params.items() if key not in MAY_DIFFER}
    if request.run_id:
        run = resumable(request.run_id, step, wanted)
    else:
        data = resolve_data(wanted.pop("data"), experiment_id())
        run = data and newest_resumable(step, {**wanted, "data_digest": normalise(data.digest)})
        if not run:
            print(
                f"{step}: no FAILED or KILLED run with these parameters and data; training "
                "from scratch"
            )
            return None
    run_id = run.info.run_id
    source = f"runs:/{run_id}/{FOLDER}/{FILE}"
    with tempfile.TemporaryDirectory() as folder:
        state = checkpoint.load(Path(download(source, folder)), source)
    curves = carry_history(run_id, state["epoch"])
    tags = {"resumed_from": run_id, "resumed_at_epoch": str(state["epoch"])}
    where = f"after epoch {state['epoch']}"
    if state.get("position"):  # saved within the next epoch
        tags["resumed_at_batch"] = str(state["position"]["batch"])
        where += f" and batch {state['position']['batch']} of epoch {state['epoch'] + 1}"
    mlflow.set_tags(tags)
    print(f"{step}: resuming run {run_id} {where}")
    return Start(run_id, run.data.params, state, curves)


def resumable(run_id: str, step: str, wanted: dict[str, str]):
    """Run `run_id`, checked: a run of `step` that did not finish, trained with the same
    parameters, with a checkpoint. A RUNNING run named here is taken to be dead (its process
    was killed with the `mlflow run` above it) and marked KILLED."""
    run = get_run(run_id, f"a FAILED or KILLED {step} run for resume_from")
    if run.data.tags.get(STEP_TAG) != step:
        kind = run.data.tags.get(STEP_TAG, "untagged")
        raise RunLookupError(f"resume_from {run_id} is a {kind} run; expected a {step} run")
    if run.info.status == "FINISHED":
        raise RunLookupError(
            f"resume_from {run_id} is FINISHED; expected a FAILED or KILLED run to go on from"
        )
    for key, value in wanted.items():
        logged = normalise(run.data.params.get(key, "<unset>"))
        if logged != value:
            raise RunLookupError(
                f"resume_from {run_id} was trained with {key}={logged}; this run has "
                f"{key}={value}, expected the same parameters"
            )
    if not has_checkpoint(run_id):
        raise RunLookupError(
            f"resume_from {run_id} has no {FOLDER}/{FILE}; it stopped before its first epoch "
            "ended, so there is nothing to resume"
        )
    if run.info.status == "RUNNING":
        MlflowClient().set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
    return run


def newest_resumable(step: str, wanted: dict[str, str]):
    """The newest FAILED or KILLED run of `step` whose params hold `wanted`, with a checkpoint."""
    for run in find_runs(experiment_id(), f"tags.{STEP_TAG} = '{step}'"):
        if run.info.status not in RESUMABLE:
            continue
        logged = {key: normalise(run.data.params.get(key, "<unset>")) for key in wanted}
        if logged == wanted and has_checkpoint(run.info.run_id):
            return run
    return None


def has_checkpoint(run_id: str) -> bool:
    files = MlflowClient().list_artifacts(run_id, FOLDER)
    return any(item.path == f"{FOLDER}/{FILE}" for item in files)


def carry_history(run_id: str, epoch: int) -> list[dict[str, float]]:
    """Copy the per-epoch metrics of run `run_id`, steps 1 to `epoch`, into the active run, and
    return them as one dict per epoch."""
    client = MlflowClient()
    points = [
        Metric(key, point.value, point.timestamp, point.step)
        for key in client.get_run(run_id).data.metrics
        if not key.startswith("system/")  # MLflow's system metrics count samples, not epochs
        for point in client.get_metric_history(run_id, key)
        if 1 <= point.step <= epoch
    ]
    for start in range(0, len(points), BATCH):
        client.log_batch(mlflow.active_run().info.run_id, metrics=points[start : start + BATCH])
    curves: list[dict[str, float]] = [{} for _ in range(epoch)]
    for point in points:
        curves[point.step - 1][point.key] = point.value
    return curves
