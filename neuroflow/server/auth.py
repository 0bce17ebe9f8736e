"""The authorization function `make server` gives MLflow's basic-auth app: MLflow's own HTTP
basic authentication, then this project's rules, which MLflow's permissions cannot say.

- **A release is a releaser's.** MLflow lets anyone with EDIT on a registered model set any of
  its aliases, and a trainer needs EDIT to register versions and move `challenger`. Moving or
  removing `champion`, and moving a version's stage, needs the `releaser` role.
- **A version's recorded digests are written once.** register records `model_digest` and
  `model_manifest` on each version it makes (neuroflow.tracking.digests); changing or removing
  them afterwards needs the `releaser` role, so that a trainer, who may write the artifacts,
  cannot swap a version's files and record the swap as its own.
- **Creating is a trainer's.** MLflow lets any user create experiments and registered models
  (and makes them MANAGE of what they create). Creating either needs the `trainer` or the
  `releaser` role, so a reader stays read-only.

Admins pass both, as they pass every MLflow check. The roles are MLflow roles, made by
`python -m neuroflow.server users add` (neuroflow.server.users). This module runs inside the
server's workers, which import it by name from the auth configuration.
"""

from __future__ import annotations

import json

from flask import Response, g, request
from mlflow.exceptions import MlflowException
from mlflow.protos.model_registry_pb2 import (
    CreateRegisteredModel,
    DeleteModelVersionTag,
    DeleteRegisteredModelAlias,
    SetModelVersionTag,
    SetRegisteredModelAlias,
    TransitionModelVersionStage,
)
from mlflow.protos.service_pb2 import CreateExperiment
from mlflow.server.auth import authenticate_request_basic_auth, store
from mlflow.server.handlers import _get_model_registry_store, get_endpoints

from neuroflow.server.roles import CREATORS, RELEASED_ALIASES, RELEASER
from neuroflow.tracking.digests import DIGEST_TAG, MANIFEST_TAG


def params() -> dict:
    return {**request.args, **(request.get_json(silent=True) or {})}


def releases() -> str | None:
    """What the request releases, or None: the champion alias moved or removed, a stage."""
    if request.path.endswith("/transition-stage"):
        return "moving a version's stage"
    alias = str(params().get("alias", ""))
    if alias not in RELEASED_ALIASES:
        return None
    verb = "removing" if request.method == "DELETE" else "moving"
    return f"{verb} alias {alias!r} of registered model {str(params().get('name', ''))!r}"


def rerecords() -> str | None:
    """What the request changes of a version's recorded digests, or None: a digest tag set
    where none was (register's own), or set again to the value it has, changes nothing."""
    asked = params()
    key, name, number = (str(asked.get(field, "")) for field in ("key", "name", "version"))
    if key not in (DIGEST_TAG, MANIFEST_TAG):
        return None
    what = f"changing tag {key!r} of version {number} of registered model {name!r} once set"
    if request.method == "DELETE":
        return what
    try:  # the server's own registry, as MLflow's auth app reads it
        tags = _get_model_registry_store().get_model_version(name, number).tags
    except MlflowException:
        return None  # no such version: the request fails on its own
    return None if tags.get(key, asked.get("value")) == asked.get("value") else what


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


MANAGE = "MANAGE on registered models: the 'releaser' role"
RELEASE = rule(frozenset({RELEASER}), MANAGE, releases)
RERECORD = rule(frozenset({RELEASER}), MANAGE, rerecords)
CREATE = rule(CREATORS, "the 'trainer' or the 'releaser' role", creates)
RULES = {
    SetRegisteredModelAlias: RELEASE,
    DeleteRegisteredModelAlias: RELEASE,
    TransitionModelVersionStage: RELEASE,
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
