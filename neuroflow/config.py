"""What a setting is. neuroflow.settings declares every one; this module makes them work.

A setting is a field of a config dataclass, made with `setting(default, ...)`: its name and type
are the field's, and it holds the default, the range or choices, and the help. From that:
- `Checked`, the base of every config, checks each value on creation with the click type the
  command line uses, so a library call fails with the same words as the option would;
- neuroflow.cli turns each field into a click option of the steps that name the config.

Nothing here imports torch or mlflow: the doors read it before anything heavy is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from neuroflow.errors import ConfigError

config = dataclasses.dataclass(frozen=True, kw_only=True)  # how every config is made: @config
SETTING = "neuroflow.setting"  # where a field's metadata keeps its Setting
UNSET = object()  # a Setting whose default each config gives (e.g. epochs: 10, or 50 for a GAN)


@dataclasses.dataclass(frozen=True)
class Setting:
    """Everything about one option but its name and type, which are its field's."""

    default: Any = UNSET
    help: str = ""
    low: float | None = None  # the range, for ints and floats
    high: float | None = None
    low_open: bool = False  # True: low itself is out of range
    high_open: bool = False
    choices: tuple[str, ...] = ()  # for a string, or the names a list may hold
    check: Callable[[str], str] | None = None  # for a string: the value, or ValueError why not
    option: bool = True  # False: a fixed hyperparameter, checked but not a command-line option

    def field(self, default: Any = UNSET, **changes) -> Any:
        """A dataclass field declared by this setting, with `default` instead of its own and
        `changes` to the rest (help=..., option=False)."""
        declared = dataclasses.replace(self, **changes) if changes else self
        value = self.default if default is UNSET else default
        if value is UNSET:
            raise TypeError("this setting leaves its default to each config: give one")
        return dataclasses.field(default=value, metadata={SETTING: declared})

    def param_type(self, kind: str) -> click.ParamType:
        """The click type of a field of type `kind`: 'int', 'float', 'bool', 'str',
        'tuple[int, ...]' (sizes) or 'tuple[str, ...]' (names from the choices)."""
        ranged = self.low is not None or self.high is not None
        bounds = {"min_open": self.low_open, "max_open": self.high_open}
        if kind == "bool":
            return click.BOOL
        if kind == "int":
            return click.IntRange(self.low, self.high, **bounds) if ranged else click.INT
        if kind == "float":
            return click.FloatRange(self.low, self.high, **bounds) if ranged else click.FLOAT
        if kind == "tuple[int, ...]":
            return Sizes()
        if kind == "tuple[str, ...]":
            return Names(self.choices)
        if self.choices:
            return click.Choice(self.choices)
        return Text(self.check) if self.check else click.STRING


def setting(default: Any, **declaration) -> Any:
    """A dataclass field that is a setting: `epochs: int = setting(10, low=1, help=...)`."""
    return Setting(default, **declaration).field()


def settings(config) -> list[tuple[dataclasses.Field, Setting]]:
    """(field, setting) for each field of a config dataclass, or of an instance, in order."""
    return [(f, f.metadata[SETTING]) for f in dataclasses.fields(config) if SETTING in f.metadata]


def kind(field: dataclasses.Field) -> str:
    """A field's type as written (settings.py annotates lazily, so it is a string)."""
    return field.type if isinstance(field.type, str) else field.type.__name__


def text(value) -> str:
    """A value as the command line writes it: tuples as '100,50', booleans in lower case."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


class Checked:
    """Base of the config dataclasses. On creation each setting is checked and converted as
    the command line does it ('3' -> 3, '16,32' -> (16, 32)), then check() applies the rules
    that span fields. A bad value raises ConfigError naming the field and what was expected."""

    def __post_init__(self) -> None:
        for field, declared in settings(self):
            value = getattr(self, field.name)
            given = value if isinstance(value, tuple | list) else text(value)
            try:
                converted = declared.param_type(kind(field)).convert(given, None, None)
            except click.BadParameter as error:
                raise ConfigError(type(self).__name__, (field.name,), error.message) from None
            object.__setattr__(self, field.name, converted)
        self.check()

    def check(self) -> None:
        """Rules across fields, each refused with self.refuse(fields, problem)."""

    def refuse(self, fields: tuple[str, ...], problem: str):
        raise ConfigError(type(self).__name__, fields, problem)


class Sizes(click.types.StringParamType):
    """'100,50' (or a tuple of ints) -> (100, 50): layer sizes, all positive."""

    name = "sizes"

    def convert(self, value, param, ctx) -> tuple[int, ...]:
        parts = value.split(",") if isinstance(value, str) else list(value)
        try:
            sizes = tuple(int(part) for part in map(str, parts))
        except ValueError:
            sizes = ()
        if not sizes or min(sizes) < 1:
            self.fail(f"{text(value)!r} is not a comma-separated list of positive integers")
        return sizes


class Names(click.types.StringParamType):
    """'mlp,cnn' (or a tuple) -> ('mlp', 'cnn'): distinct family names from `choices`."""

    name = "names"

    def __init__(self, choices: tuple[str, ...]):
        self.choices = choices

    def convert(self, value, param, ctx) -> tuple[str, ...]:
        given = text(tuple(value)) if isinstance(value, tuple | list) else value
        names = tuple(name.strip() for name in given.split(","))
        unknown = [name for name in names if name not in self.choices]
        if unknown or not given.strip():
            self.fail(
                f"{given!r} names unknown families {unknown}; expected a comma-separated list "
                f"of {', '.join(self.choices)}"
            )
        if len(set(names)) != len(names):
            self.fail(f"{given!r} names a family twice")
        return names


class Text(click.types.StringParamType):
    """A string that `check` accepts (returning it) or refuses with a ValueError saying why."""

    def __init__(self, check: Callable[[str], str]):
        self.check = check

    def convert(self, value, param, ctx) -> str:
        try:
            return self.check(str(value))
        except ValueError as error:
            self.fail(str(error))
