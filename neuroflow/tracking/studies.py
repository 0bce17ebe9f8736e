"""Where a tune's Optuna study lives, and what happens to the trials of a tune that was killed.

Without a storage URL, the study is an sqlite file kept with the tune run as `study.db`: a copy
is uploaded when each trial starts and ends, and a tune run again with the same study name goes
on from the newest copy. With a URL, every tune and worker opens the one database.

Either way, a trial whose process died is failed, its nested run marked KILLED, and its
parameters queued to run once more, so a killed tune loses only the time of the trial it was in.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import time
import warnings
from pathlib import Path

import mlflow
import optuna
from optuna.trial import TrialState

from neuroflow.errors import NeuroflowError
from neuroflow.tracking.runs import STEP_TAG, download, experiment_id, find_runs
from neuroflow.tracking.secrets import mask_url_passwords

STUDY_FILE = "study.db"  # the study of a tune run without a storage URL, kept as its artifact
# A running trial records a heartbeat in the study every HEARTBEAT_S; one silent for GRACE_S
# belongs to a process that died, and the next trial any worker starts fails it.
HEARTBEAT_S = 2
GRACE_S = 10


def fetch_study(name: str, path: Path) -> bool:
    """Download to `path` the study `name` kept by the newest other tune run that kept one.
    Returns whether there was one (the active run is then tagged with where it came from). That
    run, if still marked RUNNING, was killed with its `mlflow run`, and is marked KILLED."""
    where = f"tags.{STEP_TAG} = 'tune' and tags.study = '{name}'"
    active = mlflow.active_run().info.run_id
    for run in find_runs(experiment_id(), where):
        if run.info.run_id == active:
            continue
        files = mlflow.MlflowClient().list_artifacts(run.info.run_id)
        if any(f.path == STUDY_FILE for f in files):
            download(f"runs:/{run.info.run_id}/{STUDY_FILE}", str(path.parent))
            mlflow.set_tag("resumed_study_from", run.info.run_id)
            if run.info.status == "RUNNING":
                mlflow.MlflowClient().set_terminated(run.info.run_id, "KILLED")
            return True
    return False


def keep_study(path: Path, run_id: str) -> None:
    """Upload a consistent copy of the sqlite study at `path` (workers may be writing to it)
    as run `run_id`'s study.db."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / STUDY_FILE
        source, target = sqlite3.connect(path), sqlite3.connect(copy)
        with contextlib.closing(source), contextlib.closing(target):
            source.backup(target)
        mlflow.MlflowClient().log_artifact(run_id, str(copy))


def open_study(name: str, url: str, sampler, pruner, shown_url: str = ""):
    """The study `name` at the database `url`, created when new, with heartbeats on."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                with_driver(url),
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=rerun_killed,
            )
        return optuna.create_study(
            study_name=name,
            storage=storage,
            load_if_exists=True,
            direction="minimize",
            sampler=sampler,
            pruner=pruner,
        )
    except Exception as error:  # SQLAlchemy and the database drivers fail in many ways
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise NeuroflowError(
            mask_url_passwords(
                f"storage {shown_url or url!r} cannot be opened ({first}); expected a reachable "
                "SQL database URL such as sqlite:///study.db"
            )
        ) from None


def with_driver(url: str) -> str:
    """`url`, naming psycopg2 (the driver requirements.txt pins) where it is a plain
    postgresql:// URL, which SQLAlchemy 2.1 would open with psycopg 3."""
    plain = "postgresql://"
    return f"postgresql+psycopg2://{url.removeprefix(plain)}" if url.startswith(plain) else url


def running(study) -> list:
    return study.get_trials(states=(TrialState.RUNNING,))


def fail_killed_trials(study, copied: bool) -> None:
    """Fail the trials a killed tune left running in `study`: all of them in a copy kept with a
    run (`copied`, no process writes to it), else those whose heartbeat stops. A live trial
    beats on, so this waits at most GRACE_S + HEARTBEAT_S, and only when trials are running."""
    if copied:
        for trial in running(study):
            study.tell(trial.number, state=TrialState.FAIL)
            rerun_killed(study, trial)
        return
    deadline = time.monotonic() + GRACE_S + HEARTBEAT_S
    while running(study) and time.monotonic() < deadline:
        time.sleep(HEARTBEAT_S)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def rerun_killed(study, trial) -> None:
    """Trial `trial` died with its process: mark its nested run KILLED and queue its
    parameters once more."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    client = mlflow.MlflowClient()
    if run_id and client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, "KILLED")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)
