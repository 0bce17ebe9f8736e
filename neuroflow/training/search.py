"""Search spaces, samplers and pruners for tune, over the settings a classifier trains with.

A space maps a setting of the family's TrainConfig or model config to a range, [low, high,
"log" | "linear"], or to a list of choices (neuroflow.settings.SPACES holds the defaults): a
list of three whose last is "log" or "linear" is a range. An int setting is searched over ints.
Values are checked by the configs, as any other value is.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from neuroflow.config import kind, settings
from neuroflow.errors import ConfigError, DataError
from neuroflow.settings import MODELS, SPACES, TRAINING, TrainConfig, TuneConfig

SCALES = ("log", "linear")
NOT_SEARCHED = ("epochs", "seed", "device", "nproc", "max_batches", "patience")  # tune's own


def searchable(family: str) -> dict[str, str]:
    """{setting: its type} of what a trial of `family` may vary."""
    fields = [*settings(TrainConfig), *settings(MODELS[family])]
    return {field.name: kind(field) for field, _ in fields if field.name not in NOT_SEARCHED}


def load_space(family: str, path: str = "") -> dict:
    """The family's default space, with what the file at `path` (JSON or YAML) says on top."""
    space = dict(SPACES[family])
    if path:
        space.update(read_space(Path(path).expanduser()))
    known = searchable(family)
    for name, spec in space.items():
        check_range(name, spec, known, family)
    return space


def read_space(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text()
    except OSError as error:
        raise DataError(f"space {path}: cannot be read ({error.strerror})") from None
    try:
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0]
        raise DataError(f"space {path}: not JSON or YAML ({first})") from None
    if not isinstance(loaded, dict) or not loaded:
        raise DataError(f"space {path}: expected a mapping of setting -> range or choices")
    return loaded


def is_range(spec) -> bool:
    return isinstance(spec, list | tuple) and len(spec) == 3 and spec[2] in SCALES


def check_range(name: str, spec, known: dict[str, str], family: str) -> None:
    def refuse(problem: str):
        raise ConfigError("space", (name,), problem)

    if name not in known:
        refuse(f"{name!r} is not a setting of train_{family}; expected one of {', '.join(known)}")
    if not is_range(spec):
        if not (isinstance(spec, list | tuple) and spec):
            refuse(f"{spec!r}; expected [low, high, 'log' or 'linear'] or a list of choices")
        return
    low, high, scale = spec
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        refuse(f"[{low!r}, {high!r}]: expected numbers")
    if known[name] not in ("int", "float"):
        refuse(f"a range, but {name} is not a number; expected a list of choices")
    if low > high:
        refuse(f"low {low} > high {high}; expected low <= high")
    if scale == "log" and low <= 0:
        refuse(f"a log range from {low}; expected low > 0")


def suggest(trial, space: dict, family: str, config: TuneConfig):
    """(TrainConfig, model config) for `trial`: the family's defaults with the space's
    settings drawn, `config.epochs` epochs and no early stopping (the pruner stops trials)."""
    known = searchable(family)
    drawn = {}
    for name, spec in space.items():
        if not is_range(spec):
            drawn[name] = trial.suggest_categorical(name, list(spec))
            continue
        low, high, scale = spec
        draw = trial.suggest_int if known[name] == "int" else trial.suggest_float
        drawn[name] = draw(name, low, high, log=scale == "log")
    train_names = {field.name for field, _ in settings(TrainConfig)}
    training = dataclasses.replace(
        TRAINING[family],
        epochs=config.epochs,
        seed=config.seed,
        patience=0,
        **{k: v for k, v in drawn.items() if k in train_names},
    )
    model = MODELS[family](**{k: v for k, v in drawn.items() if k not in train_names})
    return training, model


def sampler(config: TuneConfig):
    import optuna

    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.seed)
    return optuna.samplers.TPESampler(seed=config.seed)


def pruner(config: TuneConfig):
    import optuna

    if config.pruner == "median":  # after 3 trials, from each trial's first epoch
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs)
    return optuna.pruners.NopPruner()
