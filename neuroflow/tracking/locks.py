"""A mutex held in the model registry itself, so register and promote stay correct when several
run at once against one tracking server, from any machine.

Creating a registered model is atomic: the name is unique, and a second create fails with
RESOURCE_ALREADY_EXISTS. The lock on model `name` is a registered model named `name` + SUFFIX
that lives only while the critical section runs. A lock older than STALE_S (its holder died) is
broken.

Each acquisition tags its lock with a token of its own. Releasing or breaking a lock deletes it
only if it still carries the token seen, so a holder whose lock was broken does not release its
successor's. The registry has no conditional delete, so the check and the delete are two calls:
a lock taken in the moment between them (after a holder dead for five minutes, by another
breaker) could still be removed.
"""

from __future__ import annotations

import contextlib
import time
import uuid

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from neuroflow.errors import RunLookupError

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
