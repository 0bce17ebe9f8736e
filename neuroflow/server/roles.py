"""The team's roles on its tracking server: what each may do, as MLflow grants on every
experiment and every registered model. Imports nothing heavy: the server's auth rules
(neuroflow.server.auth) and the users command (neuroflow.server.users) both read it.

| role | experiments | registered models | and |
|---|---|---|---|
| reader | READ | READ | |
| trainer | EDIT | EDIT | may create experiments and registered models |
| releaser | EDIT | MANAGE | may create them, and move or remove `champion` |
"""

from __future__ import annotations

READER, TRAINER, RELEASER = "reader", "trainer", "releaser"
ROLES = {  # role: (what it is for, {resource type: its permission on every one})
    READER: (
        "reads runs, models and artifacts",
        {"experiment": "READ", "registered_model": "READ"},
    ),
    TRAINER: (
        "runs the pipeline, registers versions, moves challenger",
        {"experiment": "EDIT", "registered_model": "EDIT"},
    ),
    RELEASER: (
        "does what a trainer does, and moves champion",
        {"experiment": "EDIT", "registered_model": "MANAGE"},
    ),
}
CREATORS = frozenset({TRAINER, RELEASER})  # may create experiments and registered models
RELEASED_ALIASES = frozenset({"champion"})  # neuroflow.tracking.registry.CHAMPION
WORKSPACE = "default"  # MLflow's one workspace while workspaces are off
