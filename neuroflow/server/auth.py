"""The authorization function `make server` gives MLflow's basic-auth app: MLflow's own HTTP
basic authentication, then this project's rules, which MLflow's permissions cannot say.

- **Releasing is a releaser's.** MLflow lets anyone with EDIT on a registered model set any of
  its aliases, and a trainer needs EDIT to register versions and move `challenger`; it also
  makes whoever creates a model MANAGE of it. Moving or removing `champion`, moving a stage,
  renaming a registered model, and deleting one (but the registry locks, neuroflow.tracking.
  registry) or a version, need the `releaser` role.
- **What register records is written once.** register creates each version with its lineage
  and the digests of its files (RECORDED_TAGS); changing or removing one afterwards needs the
  `releaser` role, so that a trainer, who may write the artifacts, cannot swap a version's
  files and record the swap as its own.
- **Creating is a trainer's.** MLflow lets any user create experiments and registered models.
  Creating either needs the `trainer` or the `releaser` role, so a reader stays read-only.

Admins pass every rule, as they pass every MLflow check. The roles are MLflow roles, made by
`python -m neuroflow.server users add` (neuroflow.server.users). This module runs inside the
server's workers, which import it by name from the auth configuration.
"""

from __future__ import annotations

import contextlib
import json

from flask import Response, g, request
from mlflow.protos.model_registry_pb2 import (
    CreateRegisteredModel,
    DeleteModelVersion,
    DeleteModelVersionTag,
    DeleteRegisteredModel,
    DeleteRegisteredModelAlias,
    RenameRegisteredModel,
    SetModelVersionTag,
    SetRegisteredModelAlias,
    TransitionModelVersionStage,
)
from mlflow.protos.service_pb2 import CreateExperiment
from mlflow.server.auth import authenticate_request_basic_auth, store
from mlflow.server.handlers import get_endpoints

from neuroflow.server.roles import CREATORS, RELEASED_ALIASES, RELEASER
from neuroflow.tracking.registry import RECORDED_TAGS, SUFFIX


def asked(field: str) -> set[str]:
    """Every value the request gives `field`: in its query string, and in its body read as
    MLflow's handlers read it (JSON whatever the content type says, decoded twice if it was
    encoded twice), so that no form of a request slips past a rule that MLflow then obeys."""
    body = request.get_json(force=True, silent=True)
    if isinstance(body, str):
        with contextlib.suppress(ValueError):
            body = json.loads(body)
    values = [request.args.get(field), body.get(field) if isinstance(body, dict) else None]
    return {str(value) for value in values if value is not None}


def named() -> str:
    return " or ".join(repr(name) for name in sorted(asked("name"))) or "''"


def releases() -> str | None:
    """What the request releases, or None: `champion` moved or removed, a stage moved."""
    if request.path.endswith("/transition-stage"):
        return f"moving a stage of registered model {named()}"
    released = sorted(asked("alias") & RELEASED_ALIASES)
    if not released:
        return None
    verb = "removing" if request.method == "DELETE" else "moving"
    return f"{verb} alias {released[0]!r} of registered model {named()}"


def removes() -> str | None:
    """What the request removes or renames, or None for a registry lock's own removal."""
    if request.path.endswith("/rename"):
        return f"renaming registered model {named()}"
    if request.path.endswith("/model-versions/delete"):
        return f"deleting a version of registered model {named()}"
    if all(name.endswith(SUFFIX) for name in asked("name")):
        return None  # a lock, which register and promote take and release themselves
    return f"deleting registered model {named()}"


def rerecords() -> str | None:
    """What the request changes of what register recorded on a version, or None."""
    keys = sorted(asked("key") & RECORDED_TAGS)
    if not keys:
        return None
    return f"changing tag {keys[0]!r} of a version of registered model {named()}"


def creates() -> str:
    kind = "an experiment" if request.path.endswith("/experiments/create") else "a registered model"
    return f"creating {kind}"


def rule(roles: frozenset[str], needs: str, action):
    """A check that lets through the requests `action` does not name, admins, and users holding
    one of `roles`; it refuses the rest, saying what the action `needs`."""

    def check(username: str) -> Response | None:
        what = action()
        if what is None:
            return None
        user = store.get_user(username)
        if user.is_admin or roles & {role.name for role in store.list_user_roles(user.id)}:
            return None
        return forbidden(f"{what} needs {needs}, which user {username!r} does not have")

    return check


RELEASER_ONLY = "the 'releaser' role (MANAGE on registered models)"
RELEASE = rule(frozenset({RELEASER}), RELEASER_ONLY, releases)
REMOVE = rule(frozenset({RELEASER}), RELEASER_ONLY, removes)
RERECORD = rule(frozenset({RELEASER}), RELEASER_ONLY, rerecords)
CREATE = rule(CREATORS, "the 'trainer' or the 'releaser' role", creates)
RULES = {
    SetRegisteredModelAlias: RELEASE,
    DeleteRegisteredModelAlias: RELEASE,
    TransitionModelVersionStage: RELEASE,
    RenameRegisteredModel: REMOVE,
    DeleteRegisteredModel: REMOVE,
    DeleteModelVersion: REMOVE,
    SetModelVersionTag: RERECORD,
    DeleteModelVersionTag: RERECORD,
    CreateExperiment: CREATE,
    CreateRegisteredModel: CREATE,
}
# Every path MLflow serves each request at (REST and the UI's ajax-api), as its own auth app
# finds its validators.
ROUTES = {
    (path, method): check
    for path, check, methods in get_endpoints(lambda message: RULES.get(message))
    if check in RULES.values()
    for method in methods
}


def forbidden(message: str) -> Response:
    body = json.dumps({"error_code": "PERMISSION_DENIED", "message": message})
    return Response(body, status=403, mimetype="application/json")


def authenticate():
    """MLflow's basic authentication, then the rule for the request's route, if it has one:
    the authenticated user (werkzeug's Authorization), or the 401 or 403 response."""
    authorization = authenticate_request_basic_auth()
    if isinstance(authorization, Response):
        return authorization
    check = ROUTES.get((request.path, request.method))
    if check is not None and not g.get("neuroflow_rule_passed"):  # MLflow asks many times
        if refused := check(authorization.username):
            return refused
        g.neuroflow_rule_passed = True
    return authorization
